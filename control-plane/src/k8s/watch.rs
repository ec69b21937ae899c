//! The watch of the cluster (see [`super`]).
