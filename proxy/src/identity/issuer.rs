//! Certificates from the control plane's CA: generate a key locally, send a
//! CSR with a credential, install the certificate, renew before expiry.
//! (Not built yet.)
