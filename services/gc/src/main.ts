import { runService } from '@berth/kit';
import { start } from './service.js';

await runService('gc', start);
