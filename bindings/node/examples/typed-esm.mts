// The ES module view (index.mjs / index.d.mts): default and named imports.
import tidelog, { open, type Database } from 'tidelog';

const a: Database = open('/tmp/tidelog-esm-a', { nodeName: 'esm-a' });
const b: Database = tidelog.open('/tmp/tidelog-esm-b', { nodeName: 'esm-b' });
const isError: boolean = new tidelog.NotFoundError('x') instanceof tidelog.TidelogError;
void isError;
a.close();
b.close();
