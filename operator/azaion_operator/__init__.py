"""The azaion-loader Kubernetes operator.

It turns ``Resource`` and ``ImageUnlock`` custom resources (group
``loader.azaion.com``) into Jobs that run the ``loader`` toolkit, and reports
the Jobs' outcome in the custom resources' status.

Its layers (handlers, reconcile, the one Kubernetes client ``kube``, pure
builders and helpers, settings) are in ``.importlinter``, the rule book the
check enforces; docs/architecture.md explains them.
"""

__version__ = "0.1.0"
