//! Unit tests of the router.
