//! Helpers for the interop tests in `tests/`.
