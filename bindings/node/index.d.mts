// ES module view of the same API (index.mjs): named exports and a default.
import * as tidelog from './index.js';

export * from './index.js';
export default tidelog;
