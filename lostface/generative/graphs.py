"""CUDA graphs for the diffusion restorer's model calls (diffusion.cuda_graphs).

At batch 1 a keyframe's UNet, VAE encoder and decoder are bound by launching kernels, not by
the GPU: Python walks a few hundred modules and launches a kernel for each small operation,
and the GPU waits. A CUDA graph records one call's kernels once and replays them with a
single launch. `Graphed` wraps a function of tensors: the first call with a new set of input
shapes warms it up on a side stream and records it into a graph (about a second per shape);
later calls with the same shapes copy their inputs into the graph's own input tensors and
replay it. Outputs are copied out, so a result stays valid after the next call.

Only for CUDA tensors and for inference (no gradients). A graph's memory comes from one pool
per `Graphed`, shared by its shapes: replays of one wrapper never overlap (the model's lock
serialises them), which is what sharing a pool needs. At most `max_graphs` shapes are kept;
further shapes run eagerly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

_WARMUP = 2  # eager calls on a side stream before recording (lazy inits, cuDNN's choices)

Key = tuple[Any, ...]


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor | None]
    output: torch.Tensor


def _key(args: tuple[torch.Tensor | None, ...]) -> Key:
    return tuple(None if a is None else (tuple(a.shape), a.dtype, a.device) for a in args)


class Graphed:
    """fn(*tensors) -> tensor, replayed from a CUDA graph per input shape (see module doc)."""

    def __init__(self, fn: Callable[..., torch.Tensor], name: str, max_graphs: int = 8) -> None:
        self.fn = fn
        self.name = name
        self.max_graphs = max_graphs
        self._graphs: dict[Key, _Graph] = {}
        self._eager: set[Key] = set()  # shapes whose recording failed
        self._pool: Any = None
        self.recorded = 0  # graphs recorded so far (benchmarks, tests)
        self.replays = 0

    def __call__(self, *args: torch.Tensor | None) -> torch.Tensor:
        key = _key(args)
        graph = self._graphs.get(key)
        if graph is None:
            if key in self._eager or len(self._graphs) >= self.max_graphs:
                return self.fn(*args)
            try:
                graph = self._graphs[key] = self._record(args)
            except RuntimeError as exc:  # an operation that a graph cannot hold: run eagerly
                self._eager.add(key)
                log.warning("%s runs without a CUDA graph: %s", self.name, str(exc)[:200])
                return self.fn(*args)
        for static, a in zip(graph.inputs, args, strict=True):
            if static is not None and a is not None:
                static.copy_(a)
        graph.graph.replay()
        self.replays += 1
        return graph.output.clone()

    def _record(self, args: tuple[torch.Tensor | None, ...]) -> _Graph:
        inputs = [None if a is None else a.detach().clone() for a in args]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(_WARMUP):
                self.fn(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (the frame loop's detector on the same GPU) may launch
        # work while this thread records
        with (
            torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"),
            torch.inference_mode(),
        ):
            output = self.fn(*inputs)
        self.recorded += 1
        log.debug("recorded a CUDA graph of %s for %s", self.name, _key(args))
        return _Graph(graph, inputs, output)
