"""Shared test settings: CPU by default (SAG_TEST_DEVICE=cuda to run on a GPU), few threads."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def device() -> torch.device:
    """The device under test: $SAG_TEST_DEVICE or CPU, never assumed to be a GPU."""
    return torch.device(os.environ.get("SAG_TEST_DEVICE", "cpu"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny-model tests (two threads crawl on shared CI cores); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
