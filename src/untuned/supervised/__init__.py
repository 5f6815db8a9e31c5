"""A backend in a child process of its own, supervised: a native crash there ends the engine, never the
process that serves clients.

``untuned serve`` runs its models this way (as Ollama runs llama.cpp's server, and vLLM V1 its engine
core): the child loads the weights and answers calls over a socket; this process keeps none of the
model but what the child reports at start-up (its name, window, vocabulary size, capabilities). If the
child dies (``abort``, a segmentation fault, the out-of-memory killer), every call in flight fails with
:class:`~untuned.errors.EngineRestarted`, the supervisor starts a new child, and later calls wait for
it (at most ``ready_timeout``) instead of failing. A child that dies before it is ready is retried with
a growing pause; after ``MAX_FAILED_STARTS`` in a row the engine is marked failed and calls are refused
with :class:`~untuned.errors.EngineUnavailable`.

The proxy has exactly the capabilities of the backend in the child (:func:`supervise` builds its class
from them), so callers check them with ``isinstance`` as for any backend. Streams are
:class:`~untuned.backends.CancellableStream`: cancelling one ends it here at once and in the child.

Wire: :class:`multiprocessing.connection.Connection` over a socket pair. Parent to child
``(op, id, payload)`` with op ``call`` (a method's value), ``iter`` (a method's iterator, item by
item), ``set`` (an attribute), ``cancel``; child to parent ``(kind, id, value)`` with kind ``ok``,
``item``, ``err`` (an error packed by class name, message and plain attributes), and ``ready`` /
``failed`` once at start-up.
"""

from untuned.supervised.process import EngineProcess, RemoteStream
from untuned.supervised.proxy import SupervisedBackend, supervise, supervised_status
from untuned.supervised.wire import EngineProcessStatus

__all__ = ["EngineProcess", "EngineProcessStatus", "RemoteStream", "SupervisedBackend", "supervise", "supervised_status"]
