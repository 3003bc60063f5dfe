// The spool's record codec: a capture as one sealed, length-prefixed record, and back.
//
// A segment file is "TTSPOOL1" then records
//   u32 length of the rest | u8 version (1) | u16 key id length | key id | u16 capture id length |
//   capture id | sealed JSON (AES-256-GCM, bound to the capture id)
// The key id and capture id are in the clear, so a record can be counted per key (keys rotate) and
// set aside under its key id without being opened.
import type { Capture } from '../capture/types.js';
import { DecryptError, open as openSealed, seal, type FieldBinding, type KeyRing } from '../keys/key-ring.js';
import { errorName } from '../lib/error-description.js';

export const SEGMENT_MAGIC = Buffer.from('TTSPOOL1', 'latin1');
export const HEADER_BYTES = SEGMENT_MAGIC.length;
export const LENGTH_BYTES = 4;
const RECORD_VERSION = 1;
/** Far above any capture (bodies are capped at TOKEN_TAP_MAX_BODY_BYTES); a larger length is damage. */
export const MAX_RECORD_BYTES = 256 * 1024 * 1024;
/** Key ids as TOKEN_TAP_KEYS allows them; anything else in a record's key id field is damage. */
const KEY_ID = /^[A-Za-z0-9_.-]{1,64}$/;

/** A spool record's binding: its capture id, and that it is a spool record (the quarantine binds its own, ingest/quarantine.ts). */
function binding(captureId: string): FieldBinding {
  return { idp: 'spool', subject: captureId, field: 'capture' };
}

/**
 * A capture as JSON, Dates as ISO strings. Where the Dates were is recorded alongside, so any Date
 * field (today observedAt; others as Capture grows) comes back as a Date and no string is mistaken
 * for one.
 */
export function encodeCapture(capture: Capture): string {
  const dates: string[][] = [];
  collectDates(capture, [], dates);
  return `{"v":1,"dates":${JSON.stringify(dates)},"capture":${JSON.stringify(capture)}}`;
}

/**
 * The paths of the Dates in `value`, as JSON.stringify will reach them (undefined fields are left
 * out). Walked without allocating per field (no Object.entries, no copies of the path but at a
 * Date): it runs on every capture's claims and extras.
 */
function collectDates(value: unknown, at: string[], out: string[][]): void {
  if (value instanceof Date) {
    if (!Number.isNaN(value.getTime())) out.push([...at]);
    return;
  }
  // Anything with its own toJSON (a Buffer, say) is not walked: its JSON is not its fields.
  if (value === null || typeof value !== 'object' || typeof (value as { toJSON?: unknown }).toJSON === 'function') return;
  if (Array.isArray(value)) {
    for (let index = 0; index < value.length; index += 1) {
      const item: unknown = value[index];
      if (item === null || typeof item !== 'object') continue;
      at.push(String(index));
      collectDates(item, at, out);
      at.pop();
    }
    return;
  }
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    const item = (value as Record<string, unknown>)[key];
    if (item === null || typeof item !== 'object') continue;
    at.push(key);
    collectDates(item, at, out);
    at.pop();
  }
}

export function decodeCapture(text: string): Capture {
  const envelope = JSON.parse(text) as { v: number; dates: string[][]; capture: Record<string, unknown> };
  if (envelope.v !== 1 || !Array.isArray(envelope.dates) || typeof envelope.capture !== 'object') throw new Error('not a version 1 spool record');
  for (const at of envelope.dates) {
    let holder: Record<string, unknown> = envelope.capture;
    for (const key of at.slice(0, -1)) holder = holder[key] as Record<string, unknown>;
    const last = at.at(-1)!;
    if (Object.hasOwn(holder, last) && typeof holder[last] === 'string') holder[last] = new Date(holder[last] as string);
  }
  return envelope.capture as unknown as Capture;
}

/**
 * A capture sealed as a spool record holds it: its JSON (encodeCapture) under the ring's active key,
 * bound to its capture id and to the spool: it does not open as anything else (a quarantined capture).
 */
function sealCapture(ring: KeyRing, capture: Capture): { keyId: string; sealed: Buffer } {
  return { keyId: ring.activeKeyId, sealed: seal(ring, encodeCapture(capture), binding(capture.captureId)) };
}

/** The capture sealCapture sealed; throws DecryptError (key missing or other material) or a parse error. */
export function openSealedCapture(ring: KeyRing, keyId: string, sealed: Buffer, captureId: string): Capture {
  return decodeCapture(openSealed(ring, keyId, sealed, binding(captureId)));
}

/** The whole record (length prefix included) of `capture`, sealed under the ring's active key. */
export function frameCapture(ring: KeyRing, capture: Capture): Buffer {
  const { keyId: activeKeyId, sealed } = sealCapture(ring, capture);
  const keyId = Buffer.from(activeKeyId, 'latin1');
  const captureId = Buffer.from(capture.captureId, 'utf8');
  const head = Buffer.alloc(LENGTH_BYTES + 1 + 2 + keyId.length + 2 + captureId.length);
  let at = head.writeUInt32BE(head.length - LENGTH_BYTES + sealed.length, 0);
  at = head.writeUInt8(RECORD_VERSION, at);
  at = head.writeUInt16BE(keyId.length, at);
  at += keyId.copy(head, at);
  at = head.writeUInt16BE(captureId.length, at);
  captureId.copy(head, at);
  return Buffer.concat([head, sealed]);
}

interface RecordParts {
  keyId: string;
  captureId: string;
  sealed: Buffer;
}

/** The clear parts of a record (after its length prefix); throws on a version or lengths that cannot be. */
function recordParts(record: Buffer): RecordParts {
  if (record.readUInt8(0) !== RECORD_VERSION) throw new Error(`record version ${record.readUInt8(0)} is unknown`);
  const keyIdLength = record.readUInt16BE(1);
  const idAt = 3 + keyIdLength;
  const captureIdLength = record.readUInt16BE(idAt);
  if (idAt + 2 + captureIdLength > record.length) throw new RangeError('record fields run past its end');
  return {
    keyId: record.toString('latin1', 3, idAt),
    captureId: record.toString('utf8', idAt + 2, idAt + 2 + captureIdLength),
    sealed: record.subarray(idAt + 2 + captureIdLength),
  };
}

/** The capture id a record names; no key is needed. */
export function recordCaptureId(record: Buffer): string | undefined {
  try {
    return recordParts(record).captureId;
  } catch {
    return undefined;
  }
}

/** The key id a record names, when it names one that can be a key id; no key is needed. */
function recordKeyId(record: Buffer): string | undefined {
  try {
    const { keyId } = recordParts(record);
    return KEY_ID.test(keyId) ? keyId : undefined;
  } catch {
    return undefined;
  }
}

/** The key id a record names, from its first bytes only (a record's head, spool-scan.ts); no key is needed. */
export function headKeyId(head: Buffer): string | undefined {
  if (head.length < 3 || head.readUInt8(0) !== RECORD_VERSION) return undefined;
  const keyIdLength = head.readUInt16BE(1);
  if (3 + keyIdLength > head.length) return undefined;
  const keyId = head.toString('latin1', 3, 3 + keyIdLength);
  return KEY_ID.test(keyId) ? keyId : undefined;
}

/** Why a record cannot be read: its key is not in the ring (kept until it is), or it is damaged. */
export type Unreadable = ({ reason: 'key_missing'; keyId: string } | { reason: 'unreadable'; keyId?: string }) & { captureId?: string };

export type OpenedRecord = { capture: Capture } | { unreadable: Unreadable; err: { name: string; message?: string } };

/** The capture in one record (without its length prefix), or why it cannot be read. */
export function openRecord(ring: KeyRing, record: Buffer): OpenedRecord {
  const keyId = recordKeyId(record);
  const captureId = recordCaptureId(record);
  const ids = captureId === undefined ? {} : { captureId };
  if (keyId !== undefined && !ring.keys.has(keyId)) {
    return {
      unreadable: { reason: 'key_missing', keyId, ...ids },
      err: { name: 'DecryptError', message: `sealed under key id "${keyId}", which is not in TOKEN_TAP_KEYS` },
    };
  }
  try {
    const parts = recordParts(record);
    return { capture: openSealedCapture(ring, parts.keyId, parts.sealed, parts.captureId) };
  } catch (error) {
    // Only the error's name for anything but a failed decryption: a parse error's message can
    // quote the decrypted text, tokens included.
    const err = error instanceof DecryptError ? { name: error.name, message: error.message } : { name: errorName(error) };
    return { unreadable: { reason: 'unreadable', ...(keyId ? { keyId } : {}), ...ids }, err };
  }
}

/**
 * Frames in `bytes` (which starts at a record boundary): whole records, and where parsing stopped.
 * `damaged`: a length no record can have, so nothing after it can be framed; `torn`: the bytes end
 * inside a record (a write cut short).
 */
export function scanFrames(bytes: Buffer): { records: number[]; end: number; damaged: boolean; torn: boolean } {
  const records: number[] = [];
  let position = 0;
  while (position + LENGTH_BYTES <= bytes.length) {
    const length = bytes.readUInt32BE(position);
    if (length < 5 || length > MAX_RECORD_BYTES) return { records, end: position, damaged: true, torn: false };
    if (position + LENGTH_BYTES + length > bytes.length) break;
    records.push(position);
    position += LENGTH_BYTES + length;
  }
  return { records, end: position, damaged: false, torn: position < bytes.length };
}

/** The records of a whole segment file's bytes, each without its length prefix; none when its header is wrong. */
export function segmentRecords(bytes: Buffer): Buffer[] {
  if (bytes.length < HEADER_BYTES || !bytes.subarray(0, HEADER_BYTES).equals(SEGMENT_MAGIC)) return [];
  const body = bytes.subarray(HEADER_BYTES);
  return scanFrames(body).records.map((start) => body.subarray(start + LENGTH_BYTES, start + LENGTH_BYTES + body.readUInt32BE(start)));
}
