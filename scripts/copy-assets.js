// Build steps tsc does not do: copy the SQL migrations next to the compiled code that reads them,
// and cut Envoy's ext_proc protos (from @grpc/grpc-js-xds) down to the messages and fields the
// sidecar uses, into one small JSON descriptor (src/extproc/pruned-descriptor.ts says why). That
// descriptor is all a built sidecar reads, so @grpc/grpc-js-xds is a dev dependency, not in the image.
import { cpSync, writeFileSync } from 'node:fs';

cpSync('src/store/migrations', 'dist/src/store/migrations', { recursive: true });

const { EXT_PROC_DESCRIPTOR_FILE, prunedExtProcDescriptor } = await import('../dist/src/extproc/protocol.js');
writeFileSync(EXT_PROC_DESCRIPTOR_FILE, JSON.stringify(prunedExtProcDescriptor()));
