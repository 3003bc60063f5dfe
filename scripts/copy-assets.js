// Build steps tsc does not do: copy the SQL migrations next to the compiled code that reads them,
// and precompile Envoy's ext_proc protos (from @grpc/grpc-js-xds) into one JSON descriptor, which
// loads several times faster at start than parsing the .proto files.
import { cpSync, writeFileSync } from 'node:fs';

cpSync('src/store/migrations', 'dist/src/store/migrations', { recursive: true });

const { EXT_PROC_DESCRIPTOR_FILE, parseExtProcProtos } = await import('../dist/src/extproc/protocol.js');
writeFileSync(EXT_PROC_DESCRIPTOR_FILE, JSON.stringify(parseExtProcProtos()));
