/**
 * Tenancy: tenants (agencies) and their attributes, the data-plane API-key lifecycle, admin
 * principals with roles, and authorization. Every change is one audit entry (audited.ts).
 */
export * from './errors.ts';
export * from './audited.ts';
export * from './roles.ts';
export * from './tenants.ts';
export * from './api-keys.ts';
export * from './admins.ts';
