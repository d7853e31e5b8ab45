-- Per vehicle and UTC day of trip start: distance, time, idling, fuel and refuels. Daily; a
-- counted trip's fuel may come from another source's copy started the day before or after.
{{ daily_table('day') }}

with trips as (
    select * from {{ ref('fct_trips') }}
    where {{ in_days('started_at', 1, 1) }}
),

fuel_events as (
    select * from {{ ref('fct_fuel_events') }}
    -- Another source's copy of a refuel already counted.
    where event_type = 'refuel' and is_duplicate_of is null and {{ in_days('occurred_at') }}
),

vehicles as (
    select * from {{ ref('dim_vehicles') }}
),

tanks as (
    select * from {{ ref('autopi_vehicle_tanks') }}
),

refuels as (
    select
        cast(occurred_at at time zone 'UTC' as date) as day,
        vehicle_id,
        count(*) as refuels,
        {{ exact_sum('volume_l') }} as refuel_l
    from fuel_events
    group by 1, 2
),

-- Vehicles seen by a source that reports refuels (AutoPi: when the tank size is known, as its
-- refuels come from level jumps): for them "no refuel" is 0, for others NULL.
refuel_covered as (
    select distinct vehicle_id
    from vehicles
    where source in ({{ "'" ~ var('refuel_sources') | join("', '") ~ "'" }})
    union
    select distinct vehicles.vehicle_id
    from vehicles
    inner join tanks
        on tanks.source_vehicle_id = vehicles.source_vehicle_id
    where vehicles.source = 'autopi'
),

-- Fuel of each counted trip: its own figure, else that of another source's copy of it (the
-- first in var trip_source_priority that knows it), so a source without fuel leaves no gap.
trip_fuel as (
    select
        coalesce(is_duplicate_of, trip_id) as trip_id,
        arg_min(
            fuel_used_l,
            case when is_duplicate_of is null then 0 else {{ source_rank('source') }} end
        ) filter (where fuel_used_l is not null) as fuel_used_l,
        arg_min(
            fuel_cost,
            case when is_duplicate_of is null then 0 else {{ source_rank('source') }} end
        ) filter (where fuel_cost is not null) as fuel_cost
    from trips
    group by 1
),

per_day as (
    select
        cast(trips.started_at at time zone 'UTC' as date) as day,
        trips.vehicle_id,
        count(*) as trips,
        -- Summed as decimals: a double sum depends on the order rows arrive in, and its last
        -- bit can flip a rounded figure between two builds of the same data.
        {{ exact_sum('trips.distance_km') }} as distance_km,
        {{ exact_sum('trips.driving_s') }} as driving_s,
        {{ exact_sum('trips.idle_s') }} as idle_s,
        {{ exact_sum('trip_fuel.fuel_used_l') }} as fuel_used_l,
        {{ exact_sum('trip_fuel.fuel_cost') }} as fuel_cost
    from trips
    left join trip_fuel on trip_fuel.trip_id = trips.trip_id
    -- Another source's copy of a trip already counted.
    where trips.is_duplicate_of is null and {{ in_days('trips.started_at') }}
    group by 1, 2
),

-- Every vehicle-day with a trip or a refuel: a refuel on a day without trips still counts.
days as (
    select day, vehicle_id from per_day
    union
    select day, vehicle_id from refuels
),

final as (
    select
        days.day,
        days.vehicle_id,
        -- No trip that day: 0 trips, km and seconds; fuel and cost stay unknown (NULL).
        coalesce(per_day.trips, 0) as trips,
        coalesce(round(per_day.distance_km, 3), 0) as distance_km,
        coalesce(per_day.driving_s, 0) as driving_s,
        coalesce(per_day.idle_s, 0) as idle_s,
        case
            when per_day.driving_s + per_day.idle_s > 0
                then round(per_day.idle_s / (per_day.driving_s + per_day.idle_s), 4)
        end as idle_share,
        round(per_day.fuel_used_l, 3) as fuel_used_l,
        case
            when per_day.distance_km > 0 then round(per_day.fuel_used_l / per_day.distance_km * 100, 2)
        end as l_per_100km,
        case
            when refuel_covered.vehicle_id is not null then coalesce(refuels.refuels, 0)
        end as refuels,
        case
            when refuel_covered.vehicle_id is not null then coalesce(refuels.refuel_l, 0)
        end as refuel_l,
        round(per_day.fuel_cost, 2) as fuel_cost
    from days
    left join per_day
        on per_day.day = days.day and per_day.vehicle_id = days.vehicle_id
    left join refuels
        on refuels.day = days.day and refuels.vehicle_id = days.vehicle_id
    left join refuel_covered
        on refuel_covered.vehicle_id = days.vehicle_id
)

select * from final
