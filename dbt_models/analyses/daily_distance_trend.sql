with days as (
    select cast(unnest(generate_series(min(day), max(day), interval 1 day)) as date)
        as day
    from {{ ref('fleet_daily') }}
),

grid as (
    select vehicles.vehicle_id, days.day, coalesce(daily.distance_km, 0) as km
    from (select distinct vehicle_id from {{ ref('fleet_daily') }}) as vehicles
    cross join days
    left join {{ ref('fleet_daily') }} as daily
        on daily.vehicle_id = vehicles.vehicle_id and daily.day = days.day
)

select
    vehicle_id,
    strftime(min(day), '%m-%d') || '..' || strftime(max(day), '%m-%d') as days,
    string_agg(cast(round(km) as integer), ' ' order by day) as km_per_day,
    round(sum(km), 1) as total_km,
    round(regr_slope(km, epoch(day) / 86400), 1) as trend_km_per_day
from grid
group by vehicle_id
order by vehicle_id
