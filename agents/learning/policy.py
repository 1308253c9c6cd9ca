"""Trained policies in a safe format, and the fleet-wide ``PolicyLibrary``.

A policy is two files side by side:

* ``<name>.safetensors``: the actor network's weights (safetensors: tensors only,
  no pickle, nothing executed on load);
* ``<name>.json``: architecture, observation names and scales, action bounds,
  multiplier ranges, the training recipe, a hash of the training data and the
  SHA-256 of the weights file.

Execution needs neither torch nor stable-baselines3: the forward pass of the
deterministic (mean) action is numpy. A weights file whose hash, tensor names or
shapes do not match its JSON is rejected with ``PolicyFileError``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from agents.fleet.actions import ACTION_ORDERS, battery_first_to_model
from agents.fleet.observation import OBS_LAYOUTS, OBS_NAMES, FleetObservation, ObservationScales
from agents.fleet.observation import observation_matrix as _obs_matrix
from grid_models.errors import InputError

FORMAT_VERSION = 1
#: how the last layer's output becomes the action: clipped to the bounds (PPO's Gaussian
#: mean), or squashed by tanh onto them (SAC; PPO with a squashed distribution)
OUTPUTS = ("mean_action", "tanh_squashed")

def _relu(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.maximum(x, 0.0)
    return result


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"tanh": np.tanh, "relu": _relu}


class PolicyFileError(InputError, ValueError):
    """A policy file is missing, tampered with, or does not match what is asked."""


def sha256_file(path: Path) -> str:
    """Hex SHA-256 digest of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Policy:
    """An MLP actor: ``hidden`` layers with ``activation``, then a linear mean head."""

    name: str
    weights: tuple[np.ndarray, ...]  # W0, W1, ..., Wout (out_features, in_features)
    biases: tuple[np.ndarray, ...]
    activation: str
    scales: ObservationScales
    action_low: np.ndarray
    action_high: np.ndarray
    metadata: Mapping[str, Any]
    action_order: str = "grid_first"  # agents.fleet.actions.ACTION_ORDERS
    obs_names: tuple[str, ...] = OBS_NAMES  # the observation layout it was trained on
    output: str = "mean_action"  # OUTPUTS

    def act_matrix(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions for an (N, len(obs_names)) observation matrix.

        The products use ``np.einsum`` rather than BLAS: each row's result is then the
        same whatever the batch size, so a fleet split over shards acts bit for bit
        like the whole fleet (BLAS kernels change their summation order with N).
        """
        x = np.asarray(obs, dtype=np.float32)
        act = ACTIVATIONS[self.activation]
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            x = act(np.einsum("ij,kj->ik", x, w) + b)
        mean = np.einsum("ij,kj->ik", x, self.weights[-1]) + self.biases[-1]
        if self.output == "tanh_squashed":
            mean = self.action_low + 0.5 * (np.tanh(mean) + 1.0) * (self.action_high
                                                                    - self.action_low)
        result: np.ndarray = np.clip(mean, self.action_low, self.action_high)
        return result

    def act(self, obs: FleetObservation) -> np.ndarray:
        """Model actions ``(u_grid, u_batt)`` for every building, shape (N, 2)."""
        matrix = _obs_matrix(obs, self.scales, self.obs_names)
        outputs = self.act_matrix(matrix).astype(np.float64)
        if self.action_order == "battery_first":
            return battery_first_to_model(outputs, obs.demand_kwh + obs.backlog_kwh,
                                          obs.battery_available_kwh)
        return outputs


def _actor_layers(model: Any) -> tuple[list[str], str]:
    """The state-dict prefixes of the actor's hidden layers and output layer, and its
    output (``OUTPUTS``), for an SB3 PPO (Gaussian or squashed) or SAC ``MlpPolicy``."""
    state = model.policy.state_dict()
    if any(k.startswith("actor.latent_pi.") for k in state):  # SAC: tanh-squashed
        hidden_prefix, out_key, output = "actor.latent_pi.", "actor.mu", "tanh_squashed"
    else:
        hidden_prefix, out_key = "mlp_extractor.policy_net.", "action_net"
        output = "tanh_squashed" if getattr(model.policy, "squash_output", False) \
            else "mean_action"
    hidden = sorted({k.rsplit(".", 1)[0] for k in state if k.startswith(hidden_prefix)},
                    key=lambda k: int(k.rsplit(".", 1)[1]))
    return [*hidden, out_key], output


def export_sb3_policy(model: Any,  # an SB3 PPO or SAC; its spaces and activation are untyped
                      directory: str | Path, name: str,
                      metadata: Mapping[str, Any], scales: ObservationScales,
                      action_order: str = "grid_first",
                      obs_names: Sequence[str] = OBS_NAMES) -> Path:
    """Write the actor of an SB3 PPO or SAC ``MlpPolicy`` as ``name.safetensors`` +
    ``name.json`` (the deterministic action: the Gaussian mean clipped, or squashed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().numpy() for k, v in model.policy.state_dict().items()}
    layers, output = _actor_layers(model)
    tensors: dict[str, np.ndarray] = {}
    for i, key in enumerate(layers):
        tensors[f"layer{i}.weight"] = np.ascontiguousarray(state[f"{key}.weight"], np.float32)
        tensors[f"layer{i}.bias"] = np.ascontiguousarray(state[f"{key}.bias"], np.float32)
    act_fn = (model.policy.actor.activation_fn if hasattr(model.policy, "actor")
              else model.policy.activation_fn).__name__.lower()
    if act_fn not in ACTIVATIONS:
        raise PolicyFileError(f"activation {act_fn!r} not supported; valid: {list(ACTIVATIONS)}")
    weights_path = directory / f"{name}.safetensors"
    save_file(tensors, str(weights_path))
    sizes = [int(tensors["layer0.weight"].shape[1])] + [
        int(tensors[f"layer{i}.weight"].shape[0]) for i in range(len(layers))
    ]
    space = model.action_space
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "architecture": {"layer_sizes": sizes, "activation": act_fn, "output": output},
        "observation": {"names": list(obs_names), "scales": scales.to_dict()},
        "action": {"names": (["u_grid", "u_batt"] if action_order == "grid_first"
                             else ["grid_share_after_battery", "battery_share"]),
                   "order": action_order, "low": space.low.tolist(),
                   "high": space.high.tolist()},
        "weights_file": weights_path.name,
        "weights_sha256": sha256_file(weights_path),
        **dict(metadata),
    }
    json_path = directory / f"{name}.json"
    json_path.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    return json_path


def load_policy(json_path: str | Path) -> Policy:
    """Load and check a policy; runs no code from the files."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise PolicyFileError(f"{json_path}: policy file not found")
    try:
        meta = json.loads(json_path.read_text())
        arch = meta["architecture"]
        sizes = [int(s) for s in arch["layer_sizes"]]
        activation = str(arch["activation"])
        obs_names = list(meta["observation"]["names"])
        scales = ObservationScales.from_dict(meta["observation"]["scales"])
        low = np.asarray(meta["action"]["low"], dtype=np.float32)
        high = np.asarray(meta["action"]["high"], dtype=np.float32)
        action_order = str(meta["action"].get("order", "grid_first"))
        output = str(arch.get("output", "mean_action"))
        weights_name = str(meta["weights_file"])
        expected_hash = str(meta["weights_sha256"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise PolicyFileError(f"{json_path}: not a valid policy description "
                              f"({type(exc).__name__})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise PolicyFileError(
            f"{json_path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    layouts = [list(v) for v in OBS_LAYOUTS.values()]
    if obs_names not in layouts or sizes[0] != len(obs_names):
        raise PolicyFileError(
            f"{json_path}: observation {obs_names} (input width {sizes[0]}) is none of this "
            f"version's layouts {layouts}"
        )
    if output not in OUTPUTS:
        raise PolicyFileError(f"{json_path}: architecture.output {output!r}; valid: "
                              f"{list(OUTPUTS)}")
    if action_order not in ACTION_ORDERS:
        raise PolicyFileError(f"{json_path}: action.order {action_order!r}; valid: "
                              f"{list(ACTION_ORDERS)}")
    if activation not in ACTIVATIONS:
        raise PolicyFileError(f"{json_path}: activation {activation!r}; valid: {list(ACTIVATIONS)}")
    weights_path = json_path.parent / Path(weights_name).name
    if not weights_path.is_file():
        raise PolicyFileError(f"{weights_path}: weights file not found")
    actual_hash = sha256_file(weights_path)
    if actual_hash != expected_hash:
        raise PolicyFileError(
            f"{weights_path}: SHA-256 {actual_hash[:12]}… does not match weights_sha256 "
            f"{expected_hash[:12]}… in {json_path.name}; the file was changed or swapped"
        )
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise PolicyFileError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    n_layers = len(sizes) - 1
    expected = {f"layer{i}.{kind}" for i in range(n_layers) for kind in ("weight", "bias")}
    if set(tensors) != expected:
        raise PolicyFileError(
            f"{weights_path}: tensors {sorted(tensors)} do not match the architecture "
            f"(expected {sorted(expected)})"
        )
    weights, biases = [], []
    for i in range(n_layers):
        w, b = tensors[f"layer{i}.weight"], tensors[f"layer{i}.bias"]
        if w.shape != (sizes[i + 1], sizes[i]) or b.shape != (sizes[i + 1],):
            raise PolicyFileError(
                f"{weights_path}: layer{i} has shape {w.shape}/{b.shape}, the JSON says "
                f"({sizes[i + 1]}, {sizes[i]})"
            )
        weights.append(w)
        biases.append(b)
    if low.shape != (sizes[-1],) or high.shape != (sizes[-1],):
        raise PolicyFileError(f"{json_path}: action bounds do not match {sizes[-1]} outputs")
    _check_values(json_path, weights_path, weights, biases, scales, low, high)
    return Policy(str(meta.get("name", json_path.stem)), tuple(weights), tuple(biases),
                  activation, scales, low, high, meta, action_order, tuple(obs_names), output)


def _check_values(json_path: Path, weights_path: Path, weights: list[np.ndarray],
                  biases: list[np.ndarray], scales: ObservationScales, low: np.ndarray,
                  high: np.ndarray) -> None:
    """Finite weights, finite observation scales > 0, finite action bounds with low <= high."""
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        for kind, arr in (("weight", w), ("bias", b)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            if bad:
                raise PolicyFileError(f"{weights_path}: layer{i}.{kind} holds {bad} non-finite "
                                      "value(s) (NaN or inf); the policy cannot be used")
    for name, value in scales.to_dict().items():
        if not (np.isfinite(value) and value > 0):
            raise PolicyFileError(f"{json_path}: observation.scales.{name} must be a finite "
                                  f"number > 0 (a divisor), got {value}")
    for name, arr in (("low", low), ("high", high)):
        if not np.isfinite(arr).all():
            raise PolicyFileError(f"{json_path}: action.{name} must be finite, got {arr.tolist()}")
    swapped = np.flatnonzero(low > high)
    if swapped.size:
        k = int(swapped[0])
        raise PolicyFileError(f"{json_path}: action bounds swapped for output {k}: low "
                              f"{float(low[k]):g} > high {float(high[k]):g}; need low <= high")


class PolicyLibrary:
    """Acts for a whole fleet: one batched forward pass per policy class.

    ``classes[i]`` names the policy of building ``i``.
    """

    name = "policy"

    def __init__(self, policies: Mapping[str, Policy], classes: Sequence[str]) -> None:
        unknown = sorted(set(classes) - set(policies))
        if unknown:
            raise PolicyFileError(
                f"policy class(es) {unknown} not loaded; available: {sorted(policies)}"
            )
        self.policies = dict(policies)
        self.classes = np.asarray(list(classes))
        self._groups = {c: np.flatnonzero(self.classes == c) for c in self.policies}

    @classmethod
    def from_directory(cls, directory: str | Path, classes: Sequence[str]) -> PolicyLibrary:
        """The library of the policies ``<class>.json`` in ``directory`` that ``classes`` name.

        Raises:
            PolicyFileError: if a policy file is missing or fails its checks.
        """
        directory = Path(directory)
        needed = sorted(set(classes))
        return cls({c: load_policy(directory / f"{c}.json") for c in needed}, classes)

    def act(self, obs: FleetObservation) -> np.ndarray:
        """Actions of every building from the policy of its class, shape (N, 2).

        Raises:
            ValueError: if ``obs`` holds a different number of buildings than ``classes``.
        """
        if obs.n != self.classes.shape[0]:
            raise ValueError(f"observation for {obs.n} buildings, library for {len(self.classes)}")
        actions = np.empty((obs.n, 2))
        for cls_name, idx in self._groups.items():
            if idx.size == 0:
                continue
            actions[idx] = self.policies[cls_name].act(obs.select(idx))
        return actions
