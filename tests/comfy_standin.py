"""A small, faithful stand-in for the ComfyUI modules the nodes touch, so their ComfyUI branches run in CI.

Modelled on ComfyUI's own modules (names, signatures and behaviour the pack relies on):

* ``folder_paths``: ``models_dir``, ``get_folder_paths(name)`` (KeyError for a name nobody registered),
  ``add_model_folder_path(name, path)``, ``get_input_directory()``, ``get_temp_directory()``;
* ``comfy.model_management``: ``InterruptProcessingException``, ``interrupt_current_processing(value=True)``,
  ``processing_interrupted()``, ``throw_exception_if_processing_interrupted()`` (raises once, then clears the
  flag, as ComfyUI does), ``get_torch_device()``, ``unet_offload_device()``, ``intermediate_device()``,
  ``soft_empty_cache(force=False)``, and the model manager: ``load_models_gpu(models, memory_required=0)``
  (makes each patcher's model resident on its load device and records it in ``current_loaded_models``),
  ``unload_all_models()`` (what ComfyUI does to make room for a big model: every resident model goes back to
  its offload device);
* ``comfy.model_patcher``: ``ModelPatcher(model, load_device, offload_device, size=0)`` and its
  ``CoreModelPatcher`` alias;
* ``comfy.utils.ProgressBar(total)`` with ``update_absolute(value, total=None, preview=None)`` and
  ``update(value)``.

Everything the nodes did is recorded on the :class:`ComfyStandIn` for the tests to check.
"""

from __future__ import annotations

import pathlib
import sys
import types

import torch


class ComfyStandIn:
    """The stand-in modules and what happened to them (progress updates, cache releases, interruptions)."""

    def __init__(self, base: pathlib.Path, device: str = "cpu") -> None:
        self.base = pathlib.Path(base)
        self.progress: list = []  # (value, total) of every ProgressBar.update_absolute / update
        self.bars: list = []  # totals of every ProgressBar created
        self.cache_releases = 0
        self.loaded: list = []  # the patchers of every load_models_gpu call, in order
        self.resident: list = []  # ComfyUI's current_loaded_models: patchers whose model sits on its load device
        self.interrupted = False
        self.device = torch.device(device)
        self.registered: dict = {}
        for sub in ("models", "input", "temp"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.modules = {
            "folder_paths": self._folder_paths(),
            "comfy": types.ModuleType("comfy"),
            "comfy.model_management": self._model_management(),
            "comfy.utils": self._utils(),
            "comfy.model_patcher": self._model_patcher(),
        }
        self.modules["comfy"].model_management = self.modules["comfy.model_management"]
        self.modules["comfy"].utils = self.modules["comfy.utils"]
        self.modules["comfy"].model_patcher = self.modules["comfy.model_patcher"]

    def install(self, monkeypatch) -> "ComfyStandIn":
        for name, module in self.modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        return self

    # --- folder_paths ---------------------------------------------------------------------------------
    def _folder_paths(self) -> types.ModuleType:
        fp = types.ModuleType("folder_paths")
        fp.models_dir = str(self.base / "models")

        def get_folder_paths(name: str) -> list:
            if name not in self.registered:
                raise KeyError(name)
            return list(self.registered[name])

        def add_model_folder_path(name: str, full_folder_path: str, is_default: bool = False) -> None:
            self.registered.setdefault(name, [])
            if is_default:
                self.registered[name].insert(0, full_folder_path)
            else:
                self.registered[name].append(full_folder_path)

        fp.get_folder_paths = get_folder_paths
        fp.add_model_folder_path = add_model_folder_path
        fp.get_input_directory = lambda: str(self.base / "input")
        fp.get_temp_directory = lambda: str(self.base / "temp")
        return fp

    # --- comfy.model_management -----------------------------------------------------------------------
    def _model_management(self) -> types.ModuleType:
        mm = types.ModuleType("comfy.model_management")

        class InterruptProcessingException(Exception):
            pass

        def interrupt_current_processing(value: bool = True) -> None:
            self.interrupted = value

        def throw_exception_if_processing_interrupted() -> None:
            if self.interrupted:
                self.interrupted = False
                raise InterruptProcessingException()

        def soft_empty_cache(force: bool = False) -> None:
            self.cache_releases += 1

        def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                            force_full_load=False):
            for patcher in models:
                if not hasattr(patcher, "load_device") or not hasattr(patcher, "model"):
                    raise TypeError(f"load_models_gpu takes model patchers, got {type(patcher).__name__}")
                patcher.model.to(patcher.load_device)
                if patcher in self.resident:
                    self.resident.remove(patcher)
                self.resident.insert(0, patcher)
                self.loaded.append(patcher)

        def unload_all_models() -> None:
            for patcher in self.resident:
                patcher.model.to(patcher.offload_device)
            self.resident.clear()

        mm.load_models_gpu = load_models_gpu
        mm.unload_all_models = unload_all_models
        mm.current_loaded_models = self.resident
        mm.InterruptProcessingException = InterruptProcessingException
        mm.interrupt_current_processing = interrupt_current_processing
        mm.processing_interrupted = lambda: self.interrupted
        mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
        mm.get_torch_device = lambda: self.device
        mm.unet_offload_device = lambda: torch.device("cpu")
        mm.intermediate_device = lambda: torch.device("cpu")
        mm.soft_empty_cache = soft_empty_cache
        return mm

    # --- comfy.model_patcher ------------------------------------------------------------------------------
    def _model_patcher(self) -> types.ModuleType:
        mp = types.ModuleType("comfy.model_patcher")

        class ModelPatcher:
            def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False) -> None:
                if not isinstance(model, torch.nn.Module):
                    raise TypeError(f"ModelPatcher wraps a torch module, got {type(model).__name__}")
                self.model, self.load_device, self.offload_device, self.size = model, load_device, offload_device, size

        mp.ModelPatcher = ModelPatcher
        mp.CoreModelPatcher = ModelPatcher
        return mp

    # --- comfy.utils ----------------------------------------------------------------------------------
    def _utils(self) -> types.ModuleType:
        utils = types.ModuleType("comfy.utils")
        stand_in = self

        class ProgressBar:
            def __init__(self, total: int) -> None:
                self.total = total
                self.current = 0
                stand_in.bars.append(total)

            def update_absolute(self, value: int, total: int | None = None, preview=None) -> None:
                if total is not None:
                    self.total = total
                self.current = min(value, self.total)
                stand_in.progress.append((self.current, self.total))

            def update(self, value: int) -> None:
                self.update_absolute(self.current + value, self.total)

        utils.ProgressBar = ProgressBar
        return utils
