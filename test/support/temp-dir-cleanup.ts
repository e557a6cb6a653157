import { afterAll } from 'vitest';
import { removeTempDirs } from './temp-dir.js';

// A setup file (vitest.config.ts): runs in every test file's context, so its hook ends each file.
afterAll(removeTempDirs);
