//! Export: a user's content as one tar archive — the user's own copy
//! (PIPL Art. 45) or a lawful disclosure under a legal case that holds the
//! user ([docs/export.md](../../docs/export.md)).
//!
//! [`Export::prepare`] does every check before the first byte: who may
//! export what ([`Scope`]), whether the case holds the user (a refused
//! disclosure is audited), whether the user may be read (a scheduled
//! erasure refuses the user's own copy, not a disclosure), then lists the
//! objects and names them with a snapshot. [`Export::run`] then writes the
//! archive ([`tar`]): per object, in order of space then id, a header and
//! the plaintext as the content read path decrypts it, with its SHA-256;
//! then `manifest.json`; then the end. Memory is bounded: an object is
//! never held whole, and the archive leaves in pieces of at most
//! [`PIECE`] into the caller's sink, which waits for the transport.
//!
//! So that the archive flows without a pause between objects, the next
//! object is opened (header read, key unwrapped) while one streams. An
//! object's SHA-256 is the one it stores (format version 2: read at the
//! end of its stream, nothing hashed) or, for version 1, computed on a
//! thread of its own, which may finish while the next object streams (one
//! object's hash at most is left behind).
//!
//! The archive is a function of the objects alone (their stored bytes,
//! named by etags, and creation times), so a broken download is resumed by
//! building it again and sending from the offset the client has; for the
//! manifest's hashes, the objects before it give their stored digests
//! (format version 2) or are read again (version 1). A snapshot that
//! differs means the objects changed: the export starts over.
//!
//! Every export that starts is recorded in the audit trail when it ends
//! (`export_user` or `disclose_user`: complete, interrupted or failed, with
//! counts); this module never writes anything else.

mod archive;
pub mod tar;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::content::{Content, ErasureGuard, ListedObject, Purpose};
use crate::crypto::Pseudonym;
use crate::error::{Error, Reason};
use crate::keys::store::{AuditEntry, AuditLog, HoldStore};
use archive::{copy_object, hashed, Archive, Digest};

/// Most archive bytes in one piece (one gRPC message).
pub const PIECE: usize = 1024 * 1024;

/// The manifest's path in the archive.
pub const MANIFEST: &str = "manifest.json";
/// The manifest's `format`. Do not change: clients read it.
pub const FORMAT: &str = "sealgate-export/1";
/// Holds read per page while looking for the case.
const HOLD_PAGE: u32 = 1000;

/// What an export covers and under what authority.
#[derive(Debug, Clone)]
pub enum Scope {
    /// The user's own copy, by a content caller: these spaces (the
    /// caller's), and only while the user is not restricted.
    Own {
        /// The spaces, a subset of the configured ones.
        spaces: Vec<String>,
    },
    /// A disclosure under a case that holds the user: every space, also
    /// while the user's erasure is scheduled.
    Disclosure {
        /// The case reference.
        case_ref: String,
    },
}

/// One export asked for.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// Who asks (audit).
    pub principal: String,
    /// Whose content.
    pub user_id: String,
    /// What and under what authority.
    pub scope: Scope,
    /// A broken download's snapshot and the bytes it already has.
    pub resume: Option<(String, u64)>,
}

/// A piece of the archive.
#[derive(Debug, Clone)]
pub struct ArchivePiece {
    /// Archive bytes, at most [`PIECE`].
    pub data: Bytes,
    /// Offset of `data` in the archive.
    pub offset: u64,
}

/// An export checked and listed, ready to run.
pub struct Prepared {
    request: ExportRequest,
    pseudonym: Pseudonym,
    purpose: Purpose,
    objects: Vec<(String, ListedObject)>,
    snapshot: String,
    offset: u64,
    guard: ErasureGuard,
}

impl Prepared {
    /// The snapshot naming the exported objects (hex SHA-256).
    pub fn snapshot(&self) -> &str {
        &self.snapshot
    }

    /// Where the archive starts being sent.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// A guard on the user's erasure (as the export's purpose has it), for
    /// the transport to check as each piece leaves.
    pub fn erasure_guard(&self) -> ErasureGuard {
        self.guard.clone()
    }
}

/// What an export sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Objects in the archive.
    pub objects: u64,
    /// Their plaintext bytes.
    pub plaintext_bytes: u64,
    /// The archive's length.
    pub archive_bytes: u64,
    /// Archive bytes sent by this call (from the resume offset).
    pub sent_bytes: u64,
}

/// One object in `manifest.json`.
#[derive(Debug, Serialize)]
struct ManifestEntry {
    space: String,
    id: String,
    path: String,
    content_type: String,
    size: u64,
    sha256: String,
    /// RFC 3339, UTC; null if the object store does not tell.
    create_time: Option<String>,
    attributes: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct Manifest<'a> {
    format: &'static str,
    snapshot: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    case_ref: Option<&'a str>,
    objects: Vec<ManifestEntry>,
}

/// The export service.
pub struct Export {
    content: Arc<Content>,
    holds: Arc<dyn HoldStore>,
    audit: Arc<dyn AuditLog>,
}

impl Export {
    /// Builds the service over content, the holds (whether a case holds a
    /// user) and the audit trail.
    pub fn new(content: Arc<Content>, holds: Arc<dyn HoldStore>, audit: Arc<dyn AuditLog>) -> Self {
        Self {
            content,
            holds,
            audit,
        }
    }

    /// The configured spaces.
    pub fn spaces(&self) -> &[String] {
        self.content.spaces()
    }

    /// Checks an export and lists what it covers; nothing is sent yet.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a bad user id or case; PERMISSION_DENIED
    /// `CASE_NOT_HOLDING` (audited) if the case does not hold the user;
    /// `USER_ERASED`; FAILED_PRECONDITION `ERASURE_PENDING` for the own
    /// copy of a restricted user; FAILED_PRECONDITION `EXPORT_CHANGED` if
    /// `resume` names another snapshot; storage failures.
    pub async fn prepare(&self, request: ExportRequest) -> Result<Prepared, Error> {
        let pseudonym = self.content.pseudonym(&request.user_id)?;
        let (purpose, spaces) = match &request.scope {
            Scope::Own { spaces } => (Purpose::Serve, spaces.clone()),
            Scope::Disclosure { case_ref } => {
                crate::names::check_name(case_ref)
                    .map_err(|e| Error::invalid_name("case_ref", e))?;
                self.check_case(&request, &pseudonym, case_ref).await?;
                (Purpose::Disclosure, self.content.spaces().to_vec())
            }
        };
        // Before the listing, so that the guard sees an erasure between
        // the check and the last piece.
        let guard = self.content.user_guard_for(&pseudonym, purpose).await;
        self.content.ensure_readable(&pseudonym, purpose).await?;
        let mut spaces = spaces;
        spaces.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        spaces.dedup();
        let mut objects = Vec::new();
        for space in &spaces {
            for o in self.content.user_objects(&pseudonym, space).await? {
                objects.push((space.clone(), o));
            }
        }
        let snapshot = snapshot(&pseudonym, case_of(&request.scope), &objects);
        let offset = match &request.resume {
            None => 0,
            Some((s, _)) if *s != snapshot => return Err(changed()),
            Some((_, offset)) => *offset,
        };
        Ok(Prepared {
            request,
            pseudonym,
            purpose,
            objects,
            snapshot,
            offset,
            guard,
        })
    }

    /// Fails `CASE_NOT_HOLDING`, audited, unless `case_ref` holds the user.
    async fn check_case(
        &self,
        request: &ExportRequest,
        p: &Pseudonym,
        case_ref: &str,
    ) -> Result<(), Error> {
        let mut after: Option<String> = None;
        loop {
            let page = self
                .holds
                .holds(Some(p), after.as_deref().map(|c| (p, c)), HOLD_PAGE)
                .await?;
            if page.iter().any(|h| h.case_ref == case_ref) {
                return Ok(());
            }
            if page.len() < HOLD_PAGE as usize {
                break;
            }
            after = page.last().map(|h| h.case_ref.clone());
        }
        let e = Error::PermissionDenied {
            reason: Reason::CaseNotHolding,
            message: format!(
                "the case {} does not hold this user: a disclosure needs a legal hold of the case on the user",
                crate::error::quote(case_ref)
            ),
        };
        self.record(
            request,
            p,
            "denied",
            format!("case {case_ref}: CASE_NOT_HOLDING"),
        )
        .await;
        Err(e)
    }

    /// Writes the archive into `out`, piece by piece from the prepared
    /// offset, and records the export in the audit trail when it ends.
    /// Stops early, without error, once `out` returns false (the receiver
    /// is gone: recorded as interrupted).
    ///
    /// # Errors
    /// FAILED_PRECONDITION `EXPORT_CHANGED` if an object changed while the
    /// archive was written; as the content read path (`USER_ERASED`,
    /// `ERASURE_PENDING` for the own copy, DATA_LOSS, storage failures).
    pub async fn run<S, F>(&self, prepared: Prepared, out: S) -> Result<Summary, Error>
    where
        S: FnMut(ArchivePiece) -> F + Send,
        F: Future<Output = bool> + Send,
    {
        let mut archive = Archive::new(out, prepared.offset);
        let result = self.write_archive(&prepared, &mut archive).await;
        let summary = Summary {
            objects: prepared.objects.len() as u64,
            plaintext_bytes: prepared
                .objects
                .iter()
                .map(|(_, o)| o.size.unwrap_or(0))
                .sum(),
            archive_bytes: archive.pos,
            sent_bytes: archive.sent,
        };
        let (outcome, result) = match result {
            Ok(true) => ("ok", Ok(summary.clone())),
            Ok(false) => ("interrupted", Ok(summary.clone())),
            Err(e) => ("failed", Err(e)),
        };
        let mut detail = format!(
            "{} objects, {} plaintext bytes, archive {} bytes, sent {} bytes from offset {}",
            summary.objects,
            summary.plaintext_bytes,
            summary.archive_bytes,
            summary.sent_bytes,
            prepared.offset
        );
        if let Some(case) = case_of(&prepared.request.scope) {
            detail = format!("case {case}: {detail}");
        }
        if let Err(e) = &result {
            detail.push_str(&format!(": {}", e.reason().as_str()));
        }
        self.record(&prepared.request, &prepared.pseudonym, outcome, detail)
            .await;
        result
    }

    /// The archive; false if the receiver went away.
    async fn write_archive<S, F>(
        &self,
        prepared: &Prepared,
        archive: &mut Archive<S>,
    ) -> Result<bool, Error>
    where
        S: FnMut(ArchivePiece) -> F + Send,
        F: Future<Output = bool> + Send,
    {
        let mut manifest = Vec::with_capacity(prepared.objects.len());
        let mut newest = 0;
        let open = |i: usize| {
            let (space, listed): &(String, ListedObject) = &prepared.objects[i];
            async move {
                let obj = self
                    .content
                    .user_object_ref(&prepared.pseudonym, space, &listed.id)?;
                self.content.open_whole_for(&obj, prepared.purpose).await
            }
        };
        let mut next: Option<Result<crate::content::OpenedObject, Error>> = None;
        let mut hashing = std::collections::VecDeque::new();
        for (i, (space, listed)) in prepared.objects.iter().enumerate() {
            let Some(size) = listed.size else {
                return Err(Error::DataLoss);
            };
            let path = format!("{space}/{}", listed.id);
            let mtime = listed.created.map_or(0, unix_seconds);
            newest = newest.max(mtime);
            let mut opened = match next.take() {
                Some(opened) => opened?,
                None => open(i).await?,
            };
            if opened.info.etag != listed.etag || opened.info.size != size {
                return Err(changed());
            }
            let info = opened.info.clone();
            if !archive.write(&tar::file_header(&path, size, mtime)).await {
                return Ok(false);
            }
            let copied = if archive.pos + size <= prepared.offset && opened.stores_digest() {
                // All before the resume offset: its stored digest is all
                // the manifest needs.
                let digest = opened.stored_digest().await?.ok_or(Error::DataLoss)?;
                archive.skip(size);
                Ok(Some(Digest::Stored(hex::encode(digest))))
            } else if i + 1 < prepared.objects.len() {
                let (copied, opened) =
                    futures_util::future::join(copy_object(opened, archive), open(i + 1)).await;
                next = Some(opened);
                copied
            } else {
                copy_object(opened, archive).await
            };
            let Some(sha) = copied? else {
                return Ok(false);
            };
            // The hash catches up while the next object streams.
            hashing.push_back((manifest.len(), sha));
            if !archive.write(&vec![0; tar::padding(size)]).await {
                return Ok(false);
            }
            manifest.push(ManifestEntry {
                space: space.clone(),
                id: listed.id.clone(),
                path,
                content_type: info.metadata.content_type,
                size,
                sha256: String::new(),
                create_time: listed.created.map(|t| {
                    crate::clock::format_time(
                        i64::try_from(
                            t.duration_since(std::time::UNIX_EPOCH)
                                .unwrap_or_default()
                                .as_millis(),
                        )
                        .unwrap_or(i64::MAX),
                    )
                }),
                attributes: info.metadata.attributes,
            });
            // At most one object's hash left running behind the stream.
            while hashing.len() > 1 {
                let (at, h) = hashing.pop_front().expect("queued");
                manifest[at].sha256 = hashed(h).await?;
            }
        }
        for (at, h) in hashing {
            manifest[at].sha256 = hashed(h).await?;
        }
        let manifest = Manifest {
            format: FORMAT,
            snapshot: &prepared.snapshot,
            case_ref: case_of(&prepared.request.scope),
            objects: manifest,
        };
        let mut json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| Error::Internal(format!("manifest: {e}")))?;
        json.push(b'\n');
        let len = json.len() as u64;
        let ok = archive
            .write(&tar::file_header(MANIFEST, len, newest))
            .await
            && archive.write(&json).await
            && archive.write(&vec![0; tar::padding(len)]).await
            && archive.write(&tar::END).await;
        if ok && prepared.offset > archive.pos {
            return Err(Error::OutOfRange(format!(
                "resume offset {} is past the end of the archive ({} bytes)",
                prepared.offset, archive.pos
            )));
        }
        Ok(ok && archive.finish().await)
    }

    /// Records an export (or a refused disclosure) in the audit trail.
    /// The export's outcome stands whether or not the record could be
    /// written; one that could not is logged.
    async fn record(&self, request: &ExportRequest, p: &Pseudonym, outcome: &str, detail: String) {
        let action = match request.scope {
            Scope::Own { .. } => "export_user",
            Scope::Disclosure { .. } => "disclose_user",
        };
        tracing::info!(
            target: "sealgate::audit",
            event = action,
            principal = %request.principal,
            pseudonym = %p,
            outcome,
            detail = %detail,
            "export"
        );
        let entry = AuditEntry {
            at_ms: crate::keys::unix_ms(),
            principal: request.principal.clone(),
            action: action.into(),
            pseudonym: Some(*p),
            outcome: outcome.into(),
            detail,
        };
        if let Err(e) = self.audit.audit(&entry).await {
            tracing::error!(error = %e, action, "cannot record an export in the audit trail");
        }
    }
}

fn case_of(scope: &Scope) -> Option<&str> {
    match scope {
        Scope::Own { .. } => None,
        Scope::Disclosure { case_ref } => Some(case_ref),
    }
}

fn changed() -> Error {
    Error::FailedPrecondition {
        reason: Reason::ExportChanged,
        message: "the user's objects changed since the export began; start again without resume"
            .into(),
    }
}

fn unix_seconds(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The snapshot: hex SHA-256 over a label, the user, the case, and each
/// object's space, id and etag in archive order. Do not change: a resumed
/// export compares it with what an earlier build of the server sent.
fn snapshot(p: &Pseudonym, case_ref: Option<&str>, objects: &[(String, ListedObject)]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"sealgate/v1/export-snapshot");
    for part in [p.to_string().as_bytes(), case_ref.unwrap_or("").as_bytes()] {
        ctx.update(b"\0");
        ctx.update(part);
    }
    for (space, o) in objects {
        for part in [space.as_bytes(), o.id.as_bytes(), o.etag.as_bytes()] {
            ctx.update(b"\0");
            ctx.update(part);
        }
    }
    hex::encode(ctx.finish().as_ref())
}
