"""Containers started ahead of the trials that take them (:func:`take_container`): a trial's
container is already running when it begins. One waits on its stdin as every container does
(:mod:`.containers`), with only its image in it; it carries its settings' labels but those
naming a trial and task (:data:`AHEAD_DROPS`). Only one set of settings has containers
waiting; :func:`release_spares` ends those not taken when the session ends (also at exit)."""

from __future__ import annotations

import atexit
import dataclasses
import json

from .containerruntime import Runtime
from .containers import Container, ContainerSpec, container_name

#: Containers launched ahead of the trial that will use them (:func:`take_container`), by
#: their settings.
_SPARES: dict[str, list[Container]] = {}
#: The label naming the trial a container is for, and its task's.
TRIAL_LABEL = "io.evalrun.trial"
TASK_LABEL = "io.evalrun.task"
#: Not on a container launched ahead (:func:`take_container`).
AHEAD_DROPS = frozenset({TRIAL_LABEL, TASK_LABEL})


def take_container(runtime: Runtime, spec: ContainerSpec, *, ahead: int = 0) -> Container:
    """A container of ``spec`` launched (:meth:`.Container.launch`): one launched ahead for the
    same settings if there is one, else a new one; then as many are launched ahead as needed
    for ``ahead`` to wait for the next trial of these settings (:func:`release_spares`
    ends them when the session ends). A container launched ahead is as fresh as one
    launched now: only its image is in it, and nothing runs in it but its first process,
    which waits for its first copy in (:meth:`.Container.send_first`). It carries the labels
    of ``spec`` but :data:`AHEAD_DROPS` (it may serve another task of the same settings),
    and a name of its own. Only one set of settings has containers waiting: those of
    other settings are ended (a session of many images does not pile them up)."""
    key = _spare_key(runtime, spec)
    for other in [k for k in _SPARES if k != key]:
        for container in _SPARES.pop(other):
            container.discard()
    waiting = _SPARES.setdefault(key, [])
    while waiting:
        container = waiting.pop(0)
        if container.client.poll() is None:
            break
        container.remove()  # ended by itself (e.g. its image went away): not used
    else:
        container = Container.launch(runtime, spec)
    labels = {k: v for k, v in spec.labels.items() if k not in AHEAD_DROPS}
    while len(waiting) < ahead:
        waiting.append(Container.launch(runtime, dataclasses.replace(
            spec, name=container_name(), labels=labels, pidfile=None)))
    return container


def _spare_key(runtime: Runtime, spec: ContainerSpec) -> str:
    fields = dataclasses.asdict(spec)
    fields.update(name="", pidfile=None,
                  labels={k: v for k, v in spec.labels.items() if k not in AHEAD_DROPS})
    return json.dumps([runtime.program, fields], sort_keys=True, default=str)


def release_spares() -> None:
    """End every container launched ahead and not taken (at the end of a session; also at
    exit). Their first processes end at once (their stdin closes), then each is waited for."""
    waiting = [c for group in _SPARES.values() for c in group]
    _SPARES.clear()
    for container in waiting:
        container.end_first_process()
    for container in waiting:
        container.remove()


# (runs before containers' _reap_pending, registered when containers was imported: the
# removals release_spares leaves to the background are waited for there)
atexit.register(release_spares)
