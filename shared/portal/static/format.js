// Formatting: figures as people read them (units, minor units of money, inclusive days).

export function sum(values) {
  return values.reduce((total, value) => total + value, 0);
}

export function bucketLabel(time, granularity) {
  return granularity === "Daily" ? time.slice(0, 10) : `${time.slice(5, 10)} ${time.slice(11, 16)}`;
}

export function utcDay(offsetDays) {
  const day = new Date();
  day.setUTCHours(0, 0, 0, 0);
  day.setUTCDate(day.getUTCDate() + offsetDays);
  return day.toISOString().slice(0, 10);
}

export function money(amount, currency) {
  return `${amount} ${currency || ""}`.trim();
}

// --- money and days, as people read them --------------------------------------------------
//
// The API's money is whole minor units (cents for USD); sums here are done in integers of
// the minor unit, so adding a day's amounts never makes or loses a cent.

export function minorDigits(currency) {
  if (!currency) return 2;
  try {
    return new Intl.NumberFormat("en-US", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
  } catch {
    return 2;
  }
}

export function toMinor(value, currency) {
  return Math.round(Number(value) * 10 ** minorDigits(currency));
}

export function moneyText(minor, currency) {
  const digits = minorDigits(currency);
  const amount = minor / 10 ** digits;
  if (!currency) return amount.toFixed(digits);
  return new Intl.NumberFormat("en-US", { style: "currency", currency, minimumFractionDigits: digits, maximumFractionDigits: digits }).format(amount);
}

export function decimalMinor(minor, currency) {
  // The exact decimal text of ``minor`` minor units ("12.30"): what statements spell.
  const digits = minorDigits(currency);
  const sign = minor < 0 ? "-" : "";
  const text = String(Math.abs(minor)).padStart(digits + 1, "0");
  return digits ? `${sign}${text.slice(0, -digits)}.${text.slice(-digits)}` : `${sign}${text}`;
}

// A quantity with sensible precision and its unit: 4 significant digits below 1, else at
// most 2 decimals, grouped by thousands.
export function quantityText(value, unit) {
  const number = Number(value);
  const options = Math.abs(number) < 1 && number !== 0
    ? { maximumSignificantDigits: 4 } : { maximumFractionDigits: 2 };
  const text = new Intl.NumberFormat("en-US", options).format(number);
  return unit ? `${text} ${unit}` : text;
}

export function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

export function addDays(day, days) {
  const date = new Date(`${day}T00:00:00Z`);
  date.setUTCDate(date.getUTCDate() + days);
  return isoDay(date);
}

export function daysBetween(first, last) {
  const days = [];
  for (let day = first; day <= last; day = addDays(day, 1)) days.push(day);
  return days;
}

export function dayLabel(day) {
  return new Date(`${day}T00:00:00Z`).toLocaleDateString("en-GB", { day: "numeric", month: "short", timeZone: "UTC" });
}

export function usageDateDay(number) {
  const text = String(number);
  return `${text.slice(0, 4)}-${text.slice(4, 6)}-${text.slice(6, 8)}`;
}
