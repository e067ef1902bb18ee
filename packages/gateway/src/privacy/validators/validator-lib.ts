/**
 * Deep imports of the three `validator` (validatorjs, pinned 13.15.35) functions we use, without
 * loading the whole package. The CommonJS modules set both `module.exports` and
 * `module.exports.default` to the function; `@types/validator` types the default import as the
 * module object, so `.default` is the form that is correct for both the type checker and Node.
 */
import isEmailMod from 'validator/lib/isEmail.js';
import isISO31661NumericMod from 'validator/lib/isISO31661Numeric.js';
import isLuhnNumberMod from 'validator/lib/isLuhnNumber.js';

/** `validator.isEmail`. */
export const isEmail = isEmailMod.default;
/** `validator.isISO31661Numeric` (ISO 3166-1 numeric country code). */
export const isISO31661Numeric: (s: string) => boolean = isISO31661NumericMod.default;
/** `validator.isLuhnNumber` (Luhn only; strips spaces and hyphens). */
export const isLuhnNumber: (s: string) => boolean = isLuhnNumberMod.default;
