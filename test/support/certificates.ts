// A throwaway CA and certificates it signed, made with openssl, for mTLS tests.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface IssuedCertificate {
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
}

export interface TestCa {
  caFile: string;
  ca: Buffer;
  /** A leaf certificate for `cn`, with `subjectAltName` (e.g. IP:127.0.0.1) when given. */
  issue(cn: string, subjectAltName?: string): IssuedCertificate;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

export function createTestCa(): TestCa {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'token-tap-ca-'));
  const caFile = path.join(dir, 'ca.pem');
  const caKey = path.join(dir, 'ca.key');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      ...EC,
      '-days',
      '1',
      '-subj',
      '/CN=token-tap test CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-keyout',
      caKey,
      '-out',
      caFile,
    ],
    { stdio: 'ignore' },
  );
  let serial = 1;
  return {
    caFile,
    ca: readFileSync(caFile),
    issue(cn, subjectAltName) {
      const base = path.join(dir, `${cn.replace(/\W/g, '_')}-${serial}`);
      const [keyFile, csr, certFile, ext] = [`${base}.key`, `${base}.csr`, `${base}.pem`, `${base}.ext`];
      execFileSync('openssl', ['req', ...EC, '-subj', `/CN=${cn}`, '-keyout', keyFile, '-out', csr], { stdio: 'ignore' });
      writeFileSync(
        ext,
        `basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n${subjectAltName ? `subjectAltName=${subjectAltName}\n` : ''}`,
      );
      execFileSync(
        'openssl',
        ['x509', '-req', '-in', csr, '-CA', caFile, '-CAkey', caKey, '-set_serial', String(serial++), '-days', '1', '-extfile', ext, '-out', certFile],
        { stdio: 'ignore' },
      );
      return { certFile, keyFile, cert: readFileSync(certFile), key: readFileSync(keyFile) };
    },
  };
}
