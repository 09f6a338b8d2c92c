//! The harness's results: one row per measure, the contenders' samples, medians, ratios, and
//! their markdown, JSON and SVG forms.

use std::fmt::Write as _;

/// One measure: each contender's samples, in the same unit.
#[derive(Debug, Clone)]
pub(crate) struct Measure {
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    /// Whether a larger figure is better (throughput) or a smaller one (latency, memory).
    pub(crate) higher_is_better: bool,
    /// The contender to compare with (stunnel, OpenVPN-UDP, plain TCP).
    pub(crate) peer: &'static str,
    /// The target ratio of sssonector to the peer, "ahead by", when the issue names one.
    pub(crate) target: Option<f64>,
    pub(crate) samples: Vec<(&'static str, Vec<f64>)>,
    /// A note shown after the figures (a contender that could not hold the load, say).
    pub(crate) note: Option<String>,
}

pub(crate) const OURS: &str = "sssonector";

impl Measure {
    pub(crate) fn new(
        name: impl Into<String>,
        unit: &'static str,
        higher_is_better: bool,
        peer: &'static str,
    ) -> Self {
        Self {
            name: name.into(),
            unit,
            higher_is_better,
            peer,
            target: None,
            samples: Vec::new(),
            note: None,
        }
    }

    pub(crate) fn target(mut self, ratio: f64) -> Self {
        self.target = Some(ratio);
        self
    }

    pub(crate) fn add(&mut self, contender: &'static str, value: f64) {
        match self.samples.iter_mut().find(|(c, _)| *c == contender) {
            Some((_, values)) => values.push(value),
            None => self.samples.push((contender, vec![value])),
        }
    }

    pub(crate) fn median(&self, contender: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(c, _)| *c == contender)
            .and_then(|(_, v)| median(v))
    }

    /// How far sssonector is ahead of the peer: the peer's figure over ours when smaller is
    /// better, ours over the peer's when larger is.
    pub(crate) fn advantage(&self) -> Option<f64> {
        advantage(
            self.median(OURS)?,
            self.median(self.peer)?,
            self.higher_is_better,
        )
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// The `q` quantile of `values` by linear interpolation.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "an index within the slice: 0 ≤ at ≤ len − 1"
)]
pub(crate) fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let at = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (low, high) = (at.floor() as usize, at.ceil() as usize);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (at - low as f64))
}

/// Ours against the peer's, as "ahead by": > 1 means ours is better.
pub(crate) fn advantage(ours: f64, peer: f64, higher_is_better: bool) -> Option<f64> {
    let ratio = if higher_is_better {
        ours / peer
    } else {
        peer / ours
    };
    ratio.is_finite().then_some(ratio)
}

fn figure(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// The markdown table: one row per measure, each contender's median, and the advantage.
pub(crate) fn markdown(measures: &[Measure]) -> String {
    let mut out = String::from(
        "| measure | medians, each contender | sssonector ahead of the peer by | target |\n|---|---|---|---|\n",
    );
    for m in measures {
        let figures: Vec<String> = m
            .samples
            .iter()
            .map(|(c, v)| {
                let text = median(v).map_or_else(|| "—".into(), figure);
                if *c == OURS {
                    format!("**{c} {text}**")
                } else {
                    format!("{c} {text}")
                }
            })
            .collect();
        let ahead = m
            .advantage()
            .map_or_else(|| "—".into(), |a| format!("{a:.2}× ({})", m.peer));
        let target = m.target.map_or_else(
            || "—".into(),
            |t| {
                let met = m.advantage().is_some_and(|a| a >= t);
                format!("≥ {t}× {}", if met { "met" } else { "missed" })
            },
        );
        let note = m.note.as_ref().map_or(String::new(), |n| format!(" ({n})"));
        let _ = writeln!(
            out,
            "| {} ({}){note} | {} | {ahead} | {target} |",
            m.name,
            m.unit,
            figures.join(" · ")
        );
    }
    out
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_number(value: Option<f64>) -> String {
    value
        .filter(|v| v.is_finite())
        .map_or_else(|| "null".into(), |v| format!("{v}"))
}

/// The results as JSON: `{"date", "machine", "command", "measures": [{…}]}`.
pub(crate) fn json(measures: &[Measure], date: &str, machine: &str, command: &str) -> String {
    let mut out = format!(
        "{{\n  \"date\": {},\n  \"machine\": {},\n  \"command\": {},\n  \"measures\": [\n",
        json_string(date),
        json_string(machine),
        json_string(command)
    );
    for (i, m) in measures.iter().enumerate() {
        let samples: Vec<String> = m
            .samples
            .iter()
            .map(|(c, v)| {
                let values: Vec<String> = v.iter().map(|x| json_number(Some(*x))).collect();
                format!(
                    "{}: {{\"median\": {}, \"samples\": [{}]}}",
                    json_string(c),
                    json_number(median(v)),
                    values.join(", ")
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "    {{\"name\": {}, \"unit\": {}, \"higher_is_better\": {}, \"peer\": {}, \"advantage\": {}, \"target\": {}, \"note\": {}, \"contenders\": {{{}}}}}{}",
            json_string(&m.name),
            json_string(m.unit),
            m.higher_is_better,
            json_string(m.peer),
            json_number(m.advantage()),
            json_number(m.target),
            m.note.as_deref().map_or_else(|| "null".into(), json_string),
            samples.join(", "),
            if i + 1 < measures.len() { "," } else { "" }
        );
    }
    out.push_str("  ]\n}\n");
    out
}

/// A bar chart: per measure, sssonector's and the peer's medians as bars scaled to the
/// larger of the two, with the advantage written beside them.
pub(crate) fn svg(measures: &[Measure], caption: &str) -> String {
    const ROW: f64 = 46.0;
    const LABEL: f64 = 300.0;
    const BAR: f64 = 360.0;
    let shown: Vec<&Measure> = measures
        .iter()
        .filter(|m| m.median(OURS).is_some() && m.median(m.peer).is_some())
        .collect();
    let height = 40.0 + ROW * shown.len() as f64 + 30.0;
    let width = LABEL + BAR + 240.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">sssonector (blue) beside its peer (grey), medians; bars scaled per row, longer is better</text>\n"
    );
    for (i, m) in shown.iter().enumerate() {
        let y = 40.0 + ROW * i as f64;
        let (ours, peer) = (
            m.median(OURS).unwrap_or(0.0),
            m.median(m.peer).unwrap_or(0.0),
        );
        // Longer is better: for smaller-is-better measures, bars show the inverse.
        let (a, b) = if m.higher_is_better {
            (ours, peer)
        } else {
            (
                1.0 / ours.max(f64::MIN_POSITIVE),
                1.0 / peer.max(f64::MIN_POSITIVE),
            )
        };
        let scale = BAR / a.max(b).max(f64::MIN_POSITIVE);
        let _ = write!(
            out,
            "<text x=\"10\" y=\"{:.0}\">{}</text>\n\
             <rect x=\"{LABEL}\" y=\"{:.0}\" width=\"{:.1}\" height=\"16\" fill=\"#2b6cb0\"/>\n\
             <text x=\"{:.1}\" y=\"{:.0}\">{} {}</text>\n\
             <rect x=\"{LABEL}\" y=\"{:.0}\" width=\"{:.1}\" height=\"16\" fill=\"#a0aec0\"/>\n\
             <text x=\"{:.1}\" y=\"{:.0}\">{} {} {}</text>\n\
             <text x=\"{:.0}\" y=\"{:.0}\" font-weight=\"bold\">{:.2}×</text>\n",
            y + 20.0,
            xml(&m.name),
            y + 2.0,
            a * scale,
            LABEL + a * scale + 4.0,
            y + 14.0,
            figure(ours),
            m.unit,
            y + 20.0,
            b * scale,
            LABEL + b * scale + 4.0,
            y + 32.0,
            m.peer,
            figure(peer),
            m.unit,
            LABEL + BAR + 175.0,
            y + 24.0,
            m.advantage().unwrap_or(0.0),
        );
    }
    let _ = write!(
        out,
        "<text x=\"10\" y=\"{:.0}\" fill=\"#4a5568\">{}</text>\n</svg>\n",
        height - 10.0,
        xml(caption)
    );
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles_interpolate() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(quantile(&[0.0, 10.0], 0.99), Some(9.9));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN]), None);
    }

    #[test]
    fn the_advantage_points_the_right_way() {
        // Twice the throughput, and half the latency, are both 2× ahead.
        assert_eq!(advantage(2.0, 1.0, true), Some(2.0));
        assert_eq!(advantage(1.0, 2.0, false), Some(2.0));
        assert_eq!(advantage(0.0, 1.0, false), None);
    }

    #[test]
    fn the_table_names_each_contender_and_whether_the_target_is_met() {
        let mut m = Measure::new("forward, 1 stream", "Gbit/s", true, "stunnel").target(2.0);
        for (c, v) in [(OURS, 6.0), ("stunnel", 3.0), (OURS, 8.0), ("stunnel", 3.0)] {
            m.add(c, v);
        }
        let table = markdown(&[m.clone()]);
        assert!(
            table.contains("**sssonector 7.00** · stunnel 3.00"),
            "{table}"
        );
        assert!(table.contains("2.33× (stunnel) | ≥ 2× met"), "{table}");
        let json = json(
            &[m.clone()],
            "2026-12-03",
            "2 vCPU",
            "cargo xtask bench tunnel",
        );
        assert!(
            json.contains("\"sssonector\": {\"median\": 7, \"samples\": [6, 8]}"),
            "{json}"
        );
        let svg = svg(&[m], "caption");
        assert!(svg.contains("2.33×") && svg.ends_with("</svg>\n"), "{svg}");
    }
}
