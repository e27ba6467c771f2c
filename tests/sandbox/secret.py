"""A secret put in the server's environment before anything opens: no answer may ever carry it."""

import os
import secrets

SECRET_NAME = "PHLOEM_SANDBOX_SECRET"
SECRET = "sbx-" + secrets.token_hex(12)
os.environ[SECRET_NAME] = SECRET
