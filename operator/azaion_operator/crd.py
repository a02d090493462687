"""Names shared by the CRDs, the Jobs and the handlers: group, kinds, label keys."""

from __future__ import annotations

from typing import Final

GROUP: Final = "loader.azaion.com"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

RESOURCE_KIND: Final = "Resource"
RESOURCE_PLURAL: Final = "resources"
UNLOCK_KIND: Final = "ImageUnlock"
UNLOCK_PLURAL: Final = "imageunlocks"

MANAGED_BY: Final = "azaion-operator"

# Labels on every Job (and its pods) that lead back to the owner.
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_OWNER_KIND: Final = f"{GROUP}/owner-kind"
LABEL_OWNER_NAME: Final = f"{GROUP}/owner-name"
LABEL_OWNER_UID: Final = f"{GROUP}/owner-uid"
LABEL_GENERATION: Final = f"{GROUP}/generation"
LABEL_NODE: Final = f"{GROUP}/node"

# Annotations on every Job: the exact node name (labels may be shortened).
ANNOTATION_NODE: Final = f"{GROUP}/node-name"
# ... and, on ImageUnlock Jobs, the container runtime and its socket on the node.
ANNOTATION_RUNTIME: Final = f"{GROUP}/runtime"
ANNOTATION_SOCKET: Final = f"{GROUP}/socket-path"

# The toolkit's exit codes that retrying cannot fix (docs/architecture.md,
# azaion_loader/errors.py): usage, configuration, credentials, fingerprint,
# auth, not found, conflict, protocol, CDN object missing, CDN access, integrity,
# not a Docker archive, image missing, images not allowed, target not writable
# (tests/unit/test_exit_codes.py ties this to azaion_loader/errors.py).
PERMANENT_EXIT_CODES: Final = (2, 3, 4, 5, 11, 12, 13, 15, 22, 23, 30, 42, 43, 45, 50)
