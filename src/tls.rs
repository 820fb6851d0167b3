//! Placeholder until the HTTPS listener lands (replaced on merge).

/// The verified client certificate's names.
#[derive(Debug, Clone)]
pub(crate) struct ClientCertificate {
    pub(crate) names: Vec<String>,
}
