"""The pipeline: screen, search, final, tracked in MLflow (``python -m pipelines``).

MLflow is imported first, before any module here imports Ray: MLflow 3.17's tracing modules
import each other in a cycle that fails ("cannot import name 'LiveSpan'") when OpenTelemetry,
which Ray loads, is already imported. A script of yours that imports both: MLflow (or this
package) first, then Ray.
"""

import mlflow  # noqa: F401  (first: see above)
