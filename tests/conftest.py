import os

import pytest
import torch

# The goldens were recorded with 2 threads; other counts move logits by ~1e-6 relative (well inside tolerance).
torch.set_num_threads(int(os.environ.get("SEGDEPLOY_TEST_THREADS", "2")))


@pytest.fixture
def tmp_artifacts(tmp_path):
    return tmp_path
