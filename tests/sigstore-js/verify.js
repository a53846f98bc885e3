// Verify one Sigstore bundle (v0.3, key hint, no certificate) fully offline with sigstore-js.
// usage: node verify.js BUNDLE.json TRUSTED_ROOT.json PUBLIC_KEY.pem HINT TLOG_THRESHOLD TSA_THRESHOLD
// prints "OK" (exit 0) or "FAIL <code> <message>" (exit 1)
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const { toSignedEntity, toTrustMaterial, Verifier } = require('@sigstore/verify');
const { bundleFromJSON } = require('@sigstore/bundle');
const { TrustedRoot } = require('@sigstore/protobuf-specs');

const [bundlePath, rootPath, keyPath, hint, tlogThreshold, tsaThreshold] = process.argv.slice(2);
try {
  const bundle = bundleFromJSON(JSON.parse(fs.readFileSync(bundlePath, 'utf8')));
  const root = TrustedRoot.fromJSON(JSON.parse(fs.readFileSync(rootPath, 'utf8')));
  const key = crypto.createPublicKey(fs.readFileSync(keyPath));
  const der = key.export({ type: 'spki', format: 'der' });
  const keys = {
    [hint]: {
      rawBytes: der,
      keyDetails: key.asymmetricKeyType === 'ed25519' ? 'PKIX_ED25519' : 'PKIX_ECDSA_P256_SHA_256',
    },
  };
  const verifier = new Verifier(toTrustMaterial(root, keys), {
    tlogThreshold: Number(tlogThreshold),
    ctlogThreshold: 0,
    timestampThreshold: Number(tsaThreshold),
  });
  verifier.verify(toSignedEntity(bundle));
  console.log('OK');
} catch (e) {
  console.log('FAIL', e.code || e.name, e.message);
  process.exit(1);
}
