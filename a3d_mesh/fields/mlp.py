"""``CodeMLP``: a small MLP head on grid features concatenated with a simplex code ``u``.

The code enters with low capacity (the A3D design): it is concatenated to the shared grid
features and only this small head sees it. The first layer is stored as one ``nn.Linear`` over
``[feat, u]`` (so the weights mean exactly "concatenation"), but it is evaluated split in two,
``feat @ W_f^T + u @ W_u^T + b``: with one code per batch the code term is a single [hidden]
vector, which avoids expanding u to [N, K] and concatenating an [N, F + K] copy.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def check_code(u: torch.Tensor, n_codes: int, n_points: int) -> None:
    """Validate a code's shape: [K] (one per batch) or [N, K] (one per point).

    Raises:
        ValueError: on any other shape.
    """
    if u.ndim == 1 and u.shape[0] == n_codes:
        return
    if u.ndim == 2 and u.shape == (n_points, n_codes):
        return
    raise ValueError(f"code u must be [{n_codes}] or [{n_points}, {n_codes}], got {tuple(u.shape)}")


class CodeMLP(nn.Module):
    """ReLU MLP ``[feat, u] -> raw outputs`` (no output activation).

    Attributes:
        in_features: grid feature width F.
        n_codes: code width K.
        out_features: output width.
        first: ``nn.Linear(F + K, hidden)`` (or ``(F + K, out)`` when ``n_hidden_layers == 0``).
        rest: the remaining layers as an ``nn.Sequential`` (ReLU between linear layers).
    """

    def __init__(
        self, in_features: int, n_codes: int, out_features: int, hidden: int = 64, n_hidden_layers: int = 1
    ) -> None:
        """Build the head.

        Args:
            in_features: F, width of the grid features.
            n_codes: K, width of the code u.
            out_features: width of the raw output.
            hidden: width of hidden layers.
            n_hidden_layers: number of hidden layers (0 = a single linear map).
        """
        super().__init__()
        if min(in_features, n_codes, out_features, hidden) < 1 or n_hidden_layers < 0:
            raise ValueError("CodeMLP sizes must be positive and n_hidden_layers >= 0")
        self.in_features = in_features
        self.n_codes = n_codes
        self.out_features = out_features
        width_in = in_features + n_codes
        if n_hidden_layers == 0:
            self.first = nn.Linear(width_in, out_features)
            self.rest = nn.Sequential()
        else:
            self.first = nn.Linear(width_in, hidden)
            layers: list[nn.Module] = [nn.ReLU()]
            for _ in range(n_hidden_layers - 1):
                layers += [nn.Linear(hidden, hidden), nn.ReLU()]
            layers.append(nn.Linear(hidden, out_features))
            self.rest = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Evaluate the head.

        Args:
            feat: [N, F] features.
            u: [K] code shared by all points, or [N, K] one code per point.

        Returns:
            [N, out_features] raw outputs (feat's dtype).
        """
        if feat.ndim != 2 or feat.shape[1] != self.in_features:
            raise ValueError(f"CodeMLP expects features [N, {self.in_features}], got {tuple(feat.shape)}")
        check_code(u, self.n_codes, feat.shape[0])
        u = u.to(feat.dtype)
        weight, bias = self.first.weight, self.first.bias
        w_feat, w_code = weight[:, : self.in_features], weight[:, self.in_features :]
        # u @ W_u^T + b is [hidden] for a batch code, [N, hidden] for per-point codes: both broadcast.
        code_term = F.linear(u, w_code, bias)
        return self.rest(F.linear(feat, w_feat) + code_term)
