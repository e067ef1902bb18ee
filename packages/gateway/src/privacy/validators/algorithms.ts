/**
 * Check-digit algorithms implemented here (spec §3.1 "Check algorithms"); library-covered
 * algorithms (Verhoeff, MOD 11-2, CPF/CNPJ mod 11, CURP mod 10, IBAN mod 97) are called through
 * the library adapters instead.
 */

/**
 * Luhn (ISO/IEC 7812-1 annex B): double every second digit from the right, subtract 9 above 9,
 * the total must be divisible by 10. `s` must be ASCII digits.
 */
export function luhnValid(s: string): boolean {
  let sum = 0;
  let dbl = false;
  for (let i = s.length - 1; i >= 0; i--) {
    let d = s.charCodeAt(i) - 48;
    if (dbl) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    dbl = !dbl;
  }
  return sum % 10 === 0;
}
