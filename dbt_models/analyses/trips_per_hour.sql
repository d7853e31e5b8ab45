with trips as (
    select
        hour(started_at at time zone 'UTC') as hour_utc,
        distance_km
    from {{ ref('fct_trips') }}
    where is_duplicate_of is null
)

select
    hour_utc,
    count(*) as trips,
    round(avg(distance_km), 1) as avg_km,
    rtrim(bar(count(*), 0, max(count(*)) over (), 20)) as chart
from trips
group by hour_utc
order by hour_utc
