//! remora-proxy
