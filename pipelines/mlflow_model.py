"""The grown network as an MLflow ``python_function`` model, logged from this file (MLflow's
"models from code", :func:`pipelines.tracking.RunLogger.log_model`).

The logged model carries this file, a copy of ``growth_core`` and two artifacts, ``spec.json``
(the grown architecture) and ``state_dict.pt`` (its weights), so loading it needs torch, numpy
and MLflow, not this project: ``mlflow.pyfunc.load_model("models:/<name>/<version>")``, or
``mlflow models serve -m models:/<name>/<version> --env-manager local``.

Input: a float32 matrix, one row of raw features per sample, as the data source holds them (the
Parquet file's feature columns, or the built-in loader's raw features): the model applies the
scaling the training data had (``preprocess.pt``: ``(raw - shift) / scale``) itself. Output: a
float32 matrix of class probabilities, one column per class.
"""

from pathlib import Path

import numpy as np
import torch
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

SPEC_ARTIFACT, WEIGHTS_ARTIFACT, PREPROCESS_ARTIFACT = "spec", "weights", "preprocess"


class GrownNetwork(PythonModel):
    """Class probabilities of the network in the model's artifacts."""

    def load_context(self, context) -> None:
        from growth_core.families import spec_from_json
        from growth_core.nets import build

        spec = spec_from_json(Path(context.artifacts[SPEC_ARTIFACT]).read_text())
        net = build(spec)
        state = torch.load(context.artifacts[WEIGHTS_ARTIFACT], weights_only=True)
        net.load_state_dict(state)
        self.net = net.eval()
        self.shift, self.scale = torch.load(
            context.artifacts[PREPROCESS_ARTIFACT], weights_only=True
        )

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        x = np.asarray(model_input, dtype=np.float32)
        n_in = self.net.spec.input_dim
        if x.ndim != 2 or x.shape[1] != n_in:
            raise ValueError(f"input: expected rows of {n_in} features, got shape {x.shape}")
        with torch.no_grad():
            features = (torch.from_numpy(x) - self.shift) / self.scale
            return torch.softmax(self.net(features), dim=1).numpy()


set_model(GrownNetwork())
