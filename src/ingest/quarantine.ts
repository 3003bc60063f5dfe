// The quarantine's records (the rows are store/quarantine.ts's): a capture the writer could not
// store is sealed as the spool seals a capture (spool-codec.ts), but bound to the quarantine: a
// spool record copied into a quarantine row (or a row into a spool) does not open, so neither can
// pass for the other. The writer seals with sealQuarantined (handed to GrantStore); a retry opens
// with openQuarantined (operations/captures-retry.ts), key rotation re-seals (operations/key-rotation.ts).
import type { Capture } from '../capture/types.js';
import { open, seal, type FieldBinding, type KeyRing } from '../keys/key-ring.js';
import { decodeCapture, encodeCapture } from './spool-codec.js';

/** Not the spool's binding (spool-codec.ts): the capture id, and that it is a quarantined capture. */
function quarantineBinding(captureId: string): FieldBinding {
  return { idp: 'quarantine', subject: captureId, field: 'capture' };
}

/** A quarantined capture's record: its JSON under the ring's active key, bound to its capture id and to the quarantine. */
export function sealQuarantined(ring: KeyRing, capture: Capture): { keyId: string; sealed: Buffer } {
  return { keyId: ring.activeKeyId, sealed: seal(ring, encodeCapture(capture), quarantineBinding(capture.captureId)) };
}

/** The capture in a quarantine row's record; throws DecryptError (a key missing, other material, or not a quarantine record) or a parse error. */
export function openQuarantined(ring: KeyRing, keyId: string, record: Buffer, captureId: string): Capture {
  return decodeCapture(open(ring, keyId, record, quarantineBinding(captureId)));
}

/** A quarantine row's record re-sealed under the ring's active key (key rotation), opened and sealed whole, never parsed. */
export function resealQuarantined(ring: KeyRing, keyId: string, record: Buffer, captureId: string): Buffer {
  return seal(ring, open(ring, keyId, record, quarantineBinding(captureId)), quarantineBinding(captureId));
}
