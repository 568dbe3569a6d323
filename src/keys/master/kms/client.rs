//! The KMS client: the two requests sealgate sends to AWS KMS (Encrypt and
//! Decrypt), a count of every attempt transmitted, and the one translation
//! of KMS SDK errors into [`MasterKeyError`]s ([`classify`]).
//!
//! The client holds no key and no state: which KMS key a master version
//! uses, and what is recorded in the key store, is the provider's
//! (`mod.rs`). It never creates, disables or deletes a KMS key, and keeps
//! nothing of a request after it: a Decrypt's plaintext is handed to the
//! caller zeroized on drop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kms::config::interceptors::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_kms::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use zeroize::Zeroizing;

use crate::keys::master::MasterKeyError;

/// A KMS operation sealgate sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsOp {
    /// KMS Encrypt: a KEK or the naming key wrapped.
    Encrypt,
    /// KMS Decrypt: a KEK or the naming key unwrapped.
    Decrypt,
}

impl KmsOp {
    fn as_str(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
        }
    }
}

/// How to reach KMS.
#[derive(Debug, Clone)]
pub struct KmsSettings {
    /// The region of the configured key (from its ARN).
    pub region: String,
    /// Endpoint override (KMS-compatible servers, tests).
    pub endpoint: Option<String>,
    /// Static credentials; `None` uses the standard AWS provider chain.
    pub credentials: Option<(String, String)>,
}

/// A KMS client and the count of the requests it sent. Holds no key and
/// no state: what versions exist is in the key store.
#[derive(Clone)]
pub struct KmsClient {
    client: aws_sdk_kms::Client,
    sent: Arc<[AtomicU64; 2]>,
}

impl std::fmt::Debug for KmsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsClient").finish_non_exhaustive()
    }
}

impl KmsClient {
    /// A client for `settings` (no request is sent).
    pub async fn connect(settings: &KmsSettings) -> Self {
        let shared = crate::aws::sdk_config(
            &settings.region,
            settings.credentials.as_ref(),
            Duration::from_secs(10),
        )
        .await;
        let mut builder = aws_sdk_kms::config::Builder::from(&shared);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Self {
            client: aws_sdk_kms::Client::from_conf(builder.build()),
            sent: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
        }
    }

    /// How many requests of `op` this client has sent (every attempt).
    pub fn sent(&self, op: KmsOp) -> u64 {
        self.sent[op as usize].load(Ordering::Relaxed)
    }

    fn counter(&self, op: KmsOp) -> AttemptCounter {
        AttemptCounter {
            op,
            sent: self.sent.clone(),
            transmitting: AtomicBool::new(false),
        }
    }

    /// KMS Encrypt of `plaintext` under `arn` with `context`; the
    /// ciphertext blob.
    pub(super) async fn encrypt(
        &self,
        arn: &str,
        plaintext: &[u8],
        context: &[(&str, String)],
    ) -> Result<Vec<u8>, MasterKeyError> {
        let mut request = self
            .client
            .encrypt()
            .key_id(arn)
            .plaintext(Blob::new(plaintext.to_vec()));
        for (k, v) in context {
            request = request.encryption_context(*k, v);
        }
        let out = request
            .customize()
            .interceptor(self.counter(KmsOp::Encrypt))
            .send()
            .await
            .map_err(|e| classify(KmsOp::Encrypt, arn, e))?;
        out.ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| MasterKeyError::KmsRefused {
                op: "Encrypt",
                arn: arn.into(),
                code: "NoCiphertext".into(),
                message: "KMS answered without a ciphertext".into(),
            })
    }

    /// KMS Decrypt of `ciphertext`, which must be `arn`'s, with `context`;
    /// the plaintext, zeroized on drop.
    pub(super) async fn decrypt(
        &self,
        arn: &str,
        ciphertext: &[u8],
        context: &[(&str, String)],
    ) -> Result<Zeroizing<Vec<u8>>, MasterKeyError> {
        let mut request = self
            .client
            .decrypt()
            .key_id(arn)
            .ciphertext_blob(Blob::new(ciphertext.to_vec()));
        for (k, v) in context {
            request = request.encryption_context(*k, v);
        }
        let mut out = request
            .customize()
            .interceptor(self.counter(KmsOp::Decrypt))
            .send()
            .await
            .map_err(|e| classify(KmsOp::Decrypt, arn, e))?;
        // The SDK's buffer of the plaintext, taken over and zeroized when
        // dropped. (The HTTP response it was decoded from is the SDK's; it
        // is freed, not scrubbed.)
        let plaintext =
            Zeroizing::new(out.plaintext.take().map(Blob::into_inner).ok_or_else(|| {
                MasterKeyError::KmsRefused {
                    op: "Decrypt",
                    arn: arn.into(),
                    code: "NoPlaintext".into(),
                    message: "KMS answered without a plaintext".into(),
                }
            })?);
        Ok(plaintext)
    }
}

/// Counts each attempt of one request that is transmitted, in the
/// client's counters and the process's metrics (with its outcome: `ok`, an
/// HTTP `error`, or `no_response`).
#[derive(Debug)]
struct AttemptCounter {
    op: KmsOp,
    sent: Arc<[AtomicU64; 2]>,
    transmitting: AtomicBool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Intercept for AttemptCounter {
    fn name(&self) -> &'static str {
        "sealgate::AttemptCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.transmitting.store(true, Ordering::Relaxed);
        self.sent[self.op as usize].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.transmitting.swap(false, Ordering::Relaxed) {
            let outcome = match context.response() {
                Some(r) if r.status().is_success() => "ok",
                Some(_) => "error",
                None => "no_response",
            };
            crate::metrics::get().kms(self.op.as_str(), outcome);
        }
        Ok(())
    }
}

/// KMS error codes that mean the KMS could not answer now: retryable.
const TRANSIENT_CODES: &[&str] = &[
    "DependencyTimeoutException",
    "KMSInternalException",
    "KeyUnavailableException",
    "ThrottlingException",
    "LimitExceededException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "InternalFailure",
];

/// The one translation of KMS SDK errors.
fn classify<E, R>(op: KmsOp, arn: &str, e: SdkError<E, R>) -> MasterKeyError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let op = match op {
        KmsOp::Encrypt => "Encrypt",
        KmsOp::Decrypt => "Decrypt",
    };
    match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or("Unknown").to_string();
            let message = err.message().unwrap_or("").to_string();
            if TRANSIENT_CODES.contains(&code.as_str()) {
                MasterKeyError::KmsUnavailable(format!("KMS {op} of {arn}: {code} {message}"))
            } else {
                MasterKeyError::KmsRefused {
                    op,
                    arn: arn.into(),
                    code,
                    message,
                }
            }
        }
        // The request could not be made (no credentials, a bad endpoint):
        // retrying cannot help.
        SdkError::ConstructionFailure(_) => MasterKeyError::KmsRefused {
            op,
            arn: arn.into(),
            code: "RequestNotMade".into(),
            message: source_chain(&e),
        },
        // Timeouts, connection failures, unparseable answers.
        _ => MasterKeyError::KmsUnavailable(format!("KMS {op} of {arn}: {}", source_chain(&e))),
    }
}

/// An error and its sources, one line.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use aws_sdk_kms::error::ErrorMetadata;
    use aws_sdk_kms::operation::decrypt::DecryptError;

    use super::*;
    use crate::keys::error::KeyError;

    const ARN: &str = "arn:aws-cn:kms:cn-north-1:123456789012:key/k";

    fn service(code: &str) -> SdkError<DecryptError, ()> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("KMS says no")
            .build();
        SdkError::service_error(DecryptError::generic(meta), ())
    }

    /// What KMS answers for keys that cannot be used (moto does not
    /// enforce a key's state, so the gateway tests cannot provoke these):
    /// refusals, which the hierarchy reports as an unusable master key,
    /// never as "retry later"; throttling and KMS's own failures are
    /// retryable.
    #[test]
    fn kms_errors_are_refusals_or_retryable() {
        for code in [
            "DisabledException",
            "KMSInvalidStateException",
            "NotFoundException",
            "AccessDeniedException",
            "InvalidCiphertextException",
            "IncorrectKeyException",
        ] {
            let e = classify(KmsOp::Decrypt, ARN, service(code));
            let text = e.to_string();
            assert!(
                matches!(&e, MasterKeyError::KmsRefused { code: c, .. } if c == code),
                "{code}: {e:?}"
            );
            assert!(
                text.contains(code) && text.contains(ARN) && text.contains("Decrypt"),
                "{text}"
            );
            assert!(
                matches!(KeyError::from(e), KeyError::MasterKeyUnusable(m) if m.contains(code)),
                "{code}"
            );
        }
        for code in [
            "ThrottlingException",
            "KMSInternalException",
            "DependencyTimeoutException",
            "KeyUnavailableException",
        ] {
            let e = classify(KmsOp::Decrypt, ARN, service(code));
            assert!(
                matches!(e, MasterKeyError::KmsUnavailable(_)),
                "{code}: {e:?}"
            );
            assert!(
                matches!(KeyError::from(e), KeyError::Unavailable(_)),
                "{code}"
            );
        }
        let timeout = SdkError::<DecryptError, ()>::timeout_error("no answer in 10 s");
        assert!(matches!(
            classify(KmsOp::Decrypt, ARN, timeout),
            MasterKeyError::KmsUnavailable(_)
        ));
        let unmade = SdkError::<DecryptError, ()>::construction_failure("no credentials");
        assert!(matches!(
            classify(KmsOp::Encrypt, ARN, unmade),
            MasterKeyError::KmsRefused { op: "Encrypt", .. }
        ));
    }
}
