import { runService } from '@berth/kit';
import { start } from './service.js';

await runService('tasks', start);
