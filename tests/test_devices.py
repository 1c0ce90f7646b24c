"""Device choice (tac_core.devices): auto picks what is there; asking for an absent device is an error."""
import pytest
import torch

from tac_core.devices import describe_devices, resolve_device
from tac_core.errors import InvalidInputError


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cuda", "mps", "cpu"}
    with pytest.raises(InvalidInputError, match="Unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") != torch.device("cuda")
        with pytest.raises(InvalidInputError, match="detected: no CUDA GPU"):
            resolve_device("cuda")
    assert "CPU with" in describe_devices()
