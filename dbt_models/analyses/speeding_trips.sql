with policy as (
    select 90 as speed_limit_kmh
),

{{ vehicle_names() }}

select
    vehicle_id,
    display_name,
    count(max_speed_kmh) as trips,
    count(*) filter (where max_speed_kmh > speed_limit_kmh) as speeding_trips,
    round(
        100 * count(*) filter (where max_speed_kmh > speed_limit_kmh)
        / count(max_speed_kmh), 1
    ) as speeding_pct,
    max(max_speed_kmh) as top_speed_kmh,
    first(started_at order by max_speed_kmh desc, started_at) as fastest_trip_at
from {{ ref('fct_trips') }}
cross join policy
join names using (vehicle_id)
where is_duplicate_of is null
group by vehicle_id, display_name
order by speeding_trips desc, vehicle_id
