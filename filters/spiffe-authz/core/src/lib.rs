//! Pure decision core of the spiffe-authz filter.
