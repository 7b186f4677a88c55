//! Pure decision core of the jwt-authn filter.
