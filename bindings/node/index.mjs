// ES module entry: the same objects as require('tidelog').
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const tidelog = require('./index.js');

export const {
  open,
  Database,
  Transaction,
  devCerts,
  setLogCallback,
  ErrorCode,
  TidelogError,
  InvalidInputError,
  NotFoundError,
  AlreadyExistsError,
  ClosedError,
  LockedError,
  StorageError,
  CorruptError,
  ClockSkewError,
  TimeoutError,
  TlsError,
  PeerError,
  UnsupportedError,
} = tidelog;
export default tidelog;
