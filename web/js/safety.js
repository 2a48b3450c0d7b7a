// Safety codes: one short code per pair of participants, derived from the two DTLS certificate fingerprints of
// the connection actually in use (getStats `certificate` entries of the selected transport, not the SDP the
// signaling server relayed). Both ends compute the same code; a man in the middle, who has to run one DTLS
// session with each side under certificates of its own, makes the two ends show different codes. What this
// proves and what not: docs/security.md.
//
// No DOM here (unit-tested in tests/web/safety.test.mjs): the derivation, and the per-peer bookkeeping of which
// code was seen and which one the user marked as verified.

/** The label that makes these hashes ours (and lets a future derivation change its name). */
export const SAFETY_CONTEXT = 'peercall safety code v1';
/** 6 groups of 5 digits: 30 digits, about 99 bits of the hash. */
export const GROUPS = 6;
export const GROUP_DIGITS = 5;

/**
 * "sha-256" + "AB:cd:…" → "sha-256 ABCD…": the algorithm lower-cased, the fingerprint as upper-case hex without
 * separators. Null when either is missing or the fingerprint is not hex.
 */
export function normalizeFingerprint(certificate) {
  const algorithm = String(certificate?.algorithm ?? '').trim().toLowerCase();
  const hex = String(certificate?.fingerprint ?? '').replace(/[:\s]/g, '').toUpperCase();
  if (!algorithm || !hex || !/^[0-9A-F]+$/.test(hex) || hex.length % 2 !== 0) return null;
  return `${algorithm} ${hex}`;
}

/**
 * The safety code of a connection from its two certificates ({algorithm, fingerprint}, as stats.js reports
 * them), or null when one is not known yet. Order-independent: the two normalized fingerprints are sorted, so
 * both ends (each of which calls its own certificate "local") hash the same bytes:
 *
 *   SHA-256("peercall safety code v1" \n lower \n higher)
 *
 * and each group of 5 digits is 5 bytes of that hash, as a big-endian number, modulo 100000.
 *
 * @returns {Promise<{code: string, groups: string[]} | null>}
 */
export async function safetyCode(local, remote) {
  const a = normalizeFingerprint(local);
  const b = normalizeFingerprint(remote);
  if (!a || !b) return null;
  const [lower, higher] = a < b ? [a, b] : [b, a];
  const bytes = new TextEncoder().encode(`${SAFETY_CONTEXT}\n${lower}\n${higher}`);
  const hash = new Uint8Array(await globalThis.crypto.subtle.digest('SHA-256', bytes));
  const groups = [];
  for (let g = 0; g < GROUPS; g++) {
    let n = 0;
    for (let i = 0; i < 5; i++) n = n * 256 + hash[g * 5 + i];
    groups.push(String(n % 10 ** GROUP_DIGITS).padStart(GROUP_DIGITS, '0'));
  }
  return { code: groups.join(' '), groups };
}

/**
 * What the client knows about each peer's safety code: the code last seen, whether it changed during the call,
 * and whether the user verified it. Verification is remembered per code (that is, per pair of certificates) in
 * `storage` (sessionStorage in the page: this tab, this session), so it holds for that certificate only: a new
 * certificate, a new code, and it is unverified again.
 *
 * @param {{get(): string[], set(codes: string[]): void}} storage
 */
export class SafetyBook {
  constructor(storage = memoryStorage()) {
    this.storage = storage;
    this.peers = new Map(); // key → {code, previous, changed, changedWhileVerified}
  }

  /**
   * A code was computed for a peer (key: a stable handle of that participant). Returns what happened:
   * 'none' (no code yet), 'new' (first code), 'same', or 'changed' (a different code than before, mid-call).
   */
  update(key, code) {
    if (!code) return 'none';
    const entry = this.peers.get(key);
    if (!entry) {
      this.peers.set(key, { code, previous: null, changed: false, changedWhileVerified: false });
      return 'new';
    }
    if (entry.code === code) return 'same';
    entry.changedWhileVerified = this.isVerified(entry.code);
    entry.previous = entry.code;
    entry.code = code;
    entry.changed = true;
    return 'changed';
  }

  /** The user compared the code with the other person and says it matches. */
  verify(key) {
    const entry = this.peers.get(key);
    if (!entry) return false;
    const codes = this.storage.get().filter((c) => c !== entry.code);
    codes.push(entry.code);
    this.storage.set(codes.slice(-100));
    entry.changed = false;
    entry.changedWhileVerified = false;
    return true;
  }

  unverify(key) {
    const entry = this.peers.get(key);
    if (!entry) return;
    this.storage.set(this.storage.get().filter((c) => c !== entry.code));
  }

  isVerified(code) {
    return Boolean(code) && this.storage.get().includes(code);
  }

  /** {code, verified, changed, changedWhileVerified, previous} of a peer, or null before its first code. */
  status(key) {
    const entry = this.peers.get(key);
    if (!entry) return null;
    return {
      code: entry.code,
      verified: this.isVerified(entry.code),
      changed: entry.changed,
      changedWhileVerified: entry.changedWhileVerified,
      previous: entry.previous,
    };
  }

  /** The participant left: forget what was seen (verified codes stay for the session). */
  forget(key) {
    this.peers.delete(key);
  }
}

/** A storage that lives as long as the object (for tests, and when sessionStorage is unavailable). */
export function memoryStorage() {
  let codes = [];
  return { get: () => [...codes], set: (next) => { codes = [...next]; } };
}
