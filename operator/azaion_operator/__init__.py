"""The azaion-loader Kubernetes operator.

It turns ``Resource`` and ``ImageUnlock`` custom resources (group
``loader.azaion.com``) into Jobs that run the ``loader`` toolkit, and reports
the Jobs' outcome in the custom resources' status.

Layers, top to bottom (a module imports only from layers below it):

1. ``azaion_operator.main``, ``azaion_operator.handlers`` (kopf)
2. ``azaion_operator.kube`` (the only module that calls the Kubernetes API)
3. ``azaion_operator.builders``, ``azaion_operator.status``,
   ``azaion_operator.nodes``, ``azaion_operator.names`` (pure)
4. ``azaion_operator.settings``, ``azaion_operator.errors``, ``azaion_operator.crd``
"""

__version__ = "0.1.0"
