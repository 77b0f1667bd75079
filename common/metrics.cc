#include "common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

#include "common/check.h"

namespace meridian::metrics {
namespace {

bool IsValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

bool IsValidLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

// Validates and sorts labels by name so that the same set in any order names the same series.
Labels Canonicalize(std::string_view metric, Labels labels, bool is_histogram) {
  std::sort(labels.begin(), labels.end());
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& label = labels[i].first;
    MERIDIAN_CHECK(IsValidLabelName(label))
        << "metric " << metric << ": bad label name '" << label << "'";
    MERIDIAN_CHECK(!(is_histogram && label == "le"))
        << "metric " << metric << ": 'le' is reserved for histogram buckets";
    MERIDIAN_CHECK(i == 0 || labels[i - 1].first != label)
        << "metric " << metric << ": label '" << label << "' given twice";
  }
  return labels;
}

void AppendEscaped(std::string& out, std::string_view text, bool escape_quotes) {
  for (char c : text) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '"':
        out += escape_quotes ? "\\\"" : "\"";
        break;
      default:
        out += c;
    }
  }
}

// Appends `{a="1",b="2"}` (with an optional trailing le label), or nothing when there are none.
void AppendLabels(std::string& out, const Labels& labels, const std::string* le = nullptr) {
  if (labels.empty() && le == nullptr) return;
  out += '{';
  bool first = true;
  for (const auto& [name, value] : labels) {
    if (!first) out += ',';
    first = false;
    out += name;
    out += "=\"";
    AppendEscaped(out, value, /*escape_quotes=*/true);
    out += '"';
  }
  if (le != nullptr) {
    if (!first) out += ',';
    out += "le=\"";
    out += *le;
    out += '"';
  }
  out += '}';
}

void AppendSample(std::string& out, std::string_view name, const Labels& labels,
                  std::string_view value, const std::string* le = nullptr) {
  out += name;
  AppendLabels(out, labels, le);
  out += ' ';
  out += value;
  out += '\n';
}

}  // namespace

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Go's strconv 'g' in shortest mode picks the exponent form when the decimal exponent is < -4
  // or >= 6, and otherwise plain digits; to_chars gives the same shortest digits for both.
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::scientific);
  MERIDIAN_CHECK(ec == std::errc()) << "to_chars failed for " << value;
  std::string_view scientific(buf, end - buf);
  const size_t e = scientific.find('e');
  MERIDIAN_CHECK(e != std::string_view::npos) << scientific;
  int exponent = 0;
  std::from_chars(scientific.data() + e + (scientific[e + 1] == '+' ? 2 : 1),
                  scientific.data() + scientific.size(), exponent);
  if (exponent < -4 || exponent >= 6) return std::string(scientific);
  auto [fixed_end, fixed_ec] =
      std::to_chars(buf, buf + sizeof(buf), value, std::chars_format::fixed);
  MERIDIAN_CHECK(fixed_ec == std::errc()) << "to_chars failed for " << value;
  return std::string(buf, fixed_end - buf);
}

void Counter::Inc(double amount) {
  MERIDIAN_CHECK(amount >= 0) << "counter increment must not be negative: " << amount;
  value_.fetch_add(amount, std::memory_order_relaxed);
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      bucket_counts_(new std::atomic<uint64_t>[upper_bounds_.size() + 1]) {
  for (size_t i = 0; i < upper_bounds_.size(); ++i) {
    MERIDIAN_CHECK(std::isfinite(upper_bounds_[i])) << "histogram bound " << upper_bounds_[i];
    MERIDIAN_CHECK(i == 0 || upper_bounds_[i - 1] < upper_bounds_[i])
        << "histogram bounds must increase: " << upper_bounds_[i - 1] << " then "
        << upper_bounds_[i];
  }
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) bucket_counts_[i].store(0);
}

void Histogram::Observe(double value) {
  // lower_bound finds the first bound >= value; NaN lands in +Inf, as in the Go client.
  const size_t bucket = std::isnan(value)
                            ? upper_bounds_.size()
                            : std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) -
                                  upper_bounds_.begin();
  bucket_counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Collect() const {
  Snapshot snapshot;
  snapshot.cumulative_counts.resize(upper_bounds_.size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    total += bucket_counts_[i].load(std::memory_order_relaxed);
    snapshot.cumulative_counts[i] = total;
  }
  // The count is derived from the buckets so that +Inf always equals _count, even while
  // observations race with collection.
  snapshot.count = total;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  MERIDIAN_CHECK(start > 0 && factor > 1 && count >= 1)
      << "start=" << start << " factor=" << factor << " count=" << count;
  std::vector<double> bounds;
  bounds.reserve(count);
  for (int i = 0; i < count; ++i) {
    bounds.push_back(start);
    start *= factor;
  }
  return bounds;
}

std::vector<double> LinearBuckets(double start, double width, int count) {
  MERIDIAN_CHECK(width > 0 && count >= 1) << "width=" << width << " count=" << count;
  std::vector<double> bounds;
  bounds.reserve(count);
  for (int i = 0; i < count; ++i) {
    bounds.push_back(start);
    start += width;
  }
  return bounds;
}

Registry::~Registry() = default;

const char* Registry::TypeName(Type type) {
  switch (type) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  MERIDIAN_UNREACHABLE() << "type " << static_cast<int>(type);
}

Registry::Series& Registry::GetOrCreate(std::string name, std::string help, Labels labels,
                                        Type type, const std::vector<double>* upper_bounds,
                                        bool is_fn) {
  MERIDIAN_CHECK(IsValidMetricName(name)) << "bad metric name '" << name << "'";
  labels = Canonicalize(name, std::move(labels), type == Type::kHistogram);
  std::lock_guard<std::mutex> lock(mu_);
  auto family_it = families_.find(name);
  if (family_it == families_.end()) {
    family_it = families_.emplace(name, Family{type, std::move(help), {}}).first;
  }
  Family& family = family_it->second;
  MERIDIAN_CHECK(family.type == type) << "metric " << name << " registered as "
                                      << TypeName(family.type) << " and as " << TypeName(type);
  std::unique_ptr<Series>& series = family.series[std::move(labels)];
  if (series == nullptr) {
    series = std::make_unique<Series>(is_fn);
    if (type == Type::kHistogram) series->histogram = std::make_unique<Histogram>(*upper_bounds);
  } else if (type == Type::kHistogram) {
    MERIDIAN_CHECK(series->histogram->upper_bounds() == *upper_bounds)
        << "histogram " << name << " registered again with different bounds";
  }
  MERIDIAN_CHECK(series->is_fn == is_fn)
      << "gauge " << name << " registered both as a gauge and as a gauge_fn";
  return *series;
}

Counter& Registry::counter(std::string name, std::string help, Labels labels) {
  return GetOrCreate(std::move(name), std::move(help), std::move(labels), Type::kCounter, nullptr,
                     /*is_fn=*/false)
      .counter;
}

Gauge& Registry::gauge(std::string name, std::string help, Labels labels) {
  return GetOrCreate(std::move(name), std::move(help), std::move(labels), Type::kGauge, nullptr,
                     /*is_fn=*/false)
      .gauge;
}

Histogram& Registry::histogram(std::string name, std::string help, std::vector<double> upper_bounds,
                               Labels labels) {
  return *GetOrCreate(std::move(name), std::move(help), std::move(labels), Type::kHistogram,
                      &upper_bounds, /*is_fn=*/false)
              .histogram;
}

void Registry::gauge_fn(std::string name, std::string help, std::function<double()> fn,
                        Labels labels) {
  MERIDIAN_CHECK(fn != nullptr) << "gauge_fn " << name << " without a function";
  // render_mu_ first: the function being replaced may be running in Render().
  std::lock_guard<std::mutex> render_lock(render_mu_);
  GetOrCreate(name, std::move(help), std::move(labels), Type::kGauge, nullptr, /*is_fn=*/true).fn =
      std::move(fn);
}

bool Registry::remove_gauge_fn(std::string_view name, Labels labels) {
  labels = Canonicalize(name, std::move(labels), /*is_histogram=*/false);
  std::lock_guard<std::mutex> render_lock(render_mu_);
  std::lock_guard<std::mutex> lock(mu_);
  auto family_it = families_.find(name);
  if (family_it == families_.end()) return false;
  Family& family = family_it->second;
  auto series_it = family.series.find(labels);
  if (series_it == family.series.end() || !series_it->second->is_fn) return false;
  family.series.erase(series_it);
  if (family.series.empty()) families_.erase(family_it);
  return true;
}

std::string Registry::Render() const {
  struct FamilyView {
    std::string_view name;
    Type type;
    std::string_view help;
    std::vector<std::pair<const Labels*, const Series*>> series;
  };
  // Holding render_mu_ keeps every Series (and family) alive: only remove_gauge_fn() deletes
  // them, and it takes render_mu_. Map nodes never move, so the views stay valid after mu_ is
  // released; mu_ is released before calling gauge functions, which may take the caller's locks.
  std::lock_guard<std::mutex> render_lock(render_mu_);
  std::vector<FamilyView> views;
  {
    std::lock_guard<std::mutex> lock(mu_);
    views.reserve(families_.size());
    for (const auto& [name, family] : families_) {
      FamilyView& view = views.emplace_back(FamilyView{name, family.type, family.help, {}});
      view.series.reserve(family.series.size());
      for (const auto& [labels, series] : family.series) {
        view.series.emplace_back(&labels, series.get());
      }
    }
  }

  std::string out;
  for (const FamilyView& family : views) {
    out += "# HELP ";
    out += family.name;
    out += ' ';
    AppendEscaped(out, family.help, /*escape_quotes=*/false);
    out += "\n# TYPE ";
    out += family.name;
    out += ' ';
    out += TypeName(family.type);
    out += '\n';
    for (const auto& [labels, series] : family.series) {
      switch (family.type) {
        case Type::kCounter:
          AppendSample(out, family.name, *labels, FormatValue(series->counter.Value()));
          break;
        case Type::kGauge:
          AppendSample(out, family.name, *labels,
                       FormatValue(series->is_fn ? series->fn() : series->gauge.Value()));
          break;
        case Type::kHistogram: {
          const Histogram& histogram = *series->histogram;
          const Histogram::Snapshot snapshot = histogram.Collect();
          const std::string bucket_name = std::string(family.name) + "_bucket";
          for (size_t i = 0; i <= histogram.upper_bounds().size(); ++i) {
            const std::string le = i < histogram.upper_bounds().size()
                                       ? FormatValue(histogram.upper_bounds()[i])
                                       : "+Inf";
            AppendSample(out, bucket_name, *labels, std::to_string(snapshot.cumulative_counts[i]),
                         &le);
          }
          AppendSample(out, std::string(family.name) + "_sum", *labels, FormatValue(snapshot.sum));
          AppendSample(out, std::string(family.name) + "_count", *labels,
                       std::to_string(snapshot.count));
          break;
        }
      }
    }
  }
  return out;
}

Registry& DefaultRegistry() {
  static Registry* const registry = new Registry();  // never destroyed: used until exit
  return *registry;
}

}  // namespace meridian::metrics
