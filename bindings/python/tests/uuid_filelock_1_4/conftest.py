"""Runs uuid-filelock 1.4's own tests against uuidlock.compat: `import
uuid_filelock` gives uuidlock.compat (see NOTICE.md)."""

import sys

import pytest

import uuidlock.compat

sys.modules["uuid_filelock"] = uuidlock.compat


@pytest.fixture(autouse=True)
def _restore_class_defaults():
    # test_default_params changes the class-level defaults and leaves them so.
    saved = (uuidlock.compat.UUIDFileLock.default_verification_delay,
             uuidlock.compat.UUIDFileLock.default_retry_interval)
    yield
    (uuidlock.compat.UUIDFileLock.default_verification_delay,
     uuidlock.compat.UUIDFileLock.default_retry_interval) = saved
