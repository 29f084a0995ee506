import { BlockDeviceError } from '../errors.js';

/** The type an option must have when it is given (`undefined` always means "the default"). */
export type OptionType = 'boolean' | 'number' | 'string' | 'function' | 'object' | 'signal';

/**
 * Checks an options argument before anything changes: `undefined` is no
 * options; anything but a plain object (`null`, a string, a number) is
 * refused, and so is an option of the wrong type — a string `'false'` for a
 * boolean would otherwise read as true. Unknown keys are left alone.
 * @returns the options, `{}` for `undefined`.
 * @throws `EINVAL` naming `what` and the option.
 */
export function checkOptions<T extends object>(
  options: T | undefined,
  types: { readonly [K in keyof T]-?: OptionType },
  what: string,
): T {
  if (options === undefined) return {} as T;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new BlockDeviceError(
      'EINVAL',
      `${what}: options must be an object, got ${options === null ? 'null' : typeof options}`,
    );
  }
  for (const [key, type] of Object.entries(types) as [string, OptionType][]) {
    const value = (options as Record<string, unknown>)[key];
    if (value === undefined || hasType(value, type)) continue;
    const got = value === null ? 'null' : typeof value;
    throw new BlockDeviceError(
      'EINVAL',
      `${what}: option ${key} must be ${type === 'signal' ? 'an AbortSignal' : `a ${type}`}, got ${got}`,
    );
  }
  return options;
}

function hasType(value: unknown, type: OptionType): boolean {
  switch (type) {
    case 'signal':
      return value instanceof AbortSignal;
    case 'object':
      return typeof value === 'object' && value !== null;
    default:
      return typeof value === type;
  }
}
