"""Test helpers (not tests): a real upstream server and raw clients."""
