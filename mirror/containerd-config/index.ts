export { configure, type ConfigureResult } from './configure.ts';
export { cleanup, type CleanupResult } from './cleanup.ts';
export { containerdConfigDefaults, type ContainerdConfigOptions } from './options.ts';
export { renderHostsToml, type HostsTomlInput } from './render.ts';
