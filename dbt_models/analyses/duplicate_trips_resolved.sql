with counted as (
    select trip_id, source, started_at, distance_km
    from {{ ref('fct_trips') }}
    where is_duplicate_of is null
),

resolved as (
    select
        counted.trip_id,
        counted.source as counted_source,
        string_agg(copy.source, ', ' order by copy.source) as copy_sources,
        max(abs(epoch(copy.started_at) - epoch(counted.started_at))) as start_gap_s,
        max(abs(copy.distance_km - counted.distance_km)) as km_gap
    from counted
    left join {{ ref('fct_trips') }} as copy on copy.is_duplicate_of = counted.trip_id
    group by counted.trip_id, counted.source
)

select
    counted_source,
    coalesce(copy_sources, '(none)') as duplicate_sources,
    count(*) as trips,
    round(max(start_gap_s)) as max_start_gap_s,
    round(max(km_gap), 2) as max_km_gap
from resolved
group by counted_source, copy_sources
order by trips desc, counted_source, duplicate_sources
