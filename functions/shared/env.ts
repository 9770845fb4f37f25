/** Reads required configuration once, at a composition root, with an error that names it. */
export function requireEnv(name: string, env: NodeJS.ProcessEnv = process.env): string {
  const value = env[name];
  if (!value) {
    throw new Error(`environment variable ${name} is not set; it is required by this function`);
  }
  return value;
}
