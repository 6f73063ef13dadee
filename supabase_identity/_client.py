"""The two clients, re-exported from where they are made (``_async`` and its generated ``_sync``).

Kept so that ``from supabase_identity._client import IdentityClient`` still works; the package's
public path is ``from supabase_identity import IdentityClient, AsyncIdentityClient``.
"""

from ._async._client import AsyncIdentityClient
from ._sync._client import IdentityClient

__all__ = ["AsyncIdentityClient", "IdentityClient"]
